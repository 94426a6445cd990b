"""Incident pages: the list with suggestions, the incident page (clocks, suspects, the live
merged timeline), the postmortem, the on-call view and the severity policy. Thin: services
write, selectors read; every POST answers with a redirect (or the fragment, for htmx)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from releasecenter import events, incident_hooks
from releasecenter.access import project_for
from releasecenter.models import Environment, Membership
from releasecenter.services import Conflict
from releasecenter.validation import ascii_int

from . import auto, postmortems, selectors, services, timeline
from .models import SEVERITIES, ActionItem, Incident, IncidentSuggestion, Postmortem, TimelineEntry


def incident_for(request, slug: str, number: int, minimum: str = Membership.Role.VIEWER):  # noqa: ANN001, ANN201
    """The incident and the user's membership; another project's incident is a 404."""
    project, membership = project_for(request.user, slug)
    incident = (
        Incident.objects.select_related("project", "commander", "acknowledged_by")
        .prefetch_related("environments", "services", "participants")
        .filter(project=project, number=number)
        .first()
    )
    if incident is None:
        raise Http404("No such incident.")
    request.project = project
    if minimum != Membership.Role.VIEWER:
        from releasecenter.access import require_role

        require_role(membership, minimum)
    return incident, membership


def _say(request, exc: Exception) -> None:  # noqa: ANN001
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            for error in errors:
                messages.error(request, f"{field.replace('_', ' ').capitalize()}: {error}")
    elif isinstance(exc, ValidationError):
        for error in exc.messages:
            messages.error(request, error)
    else:
        messages.error(request, str(exc))


def _back(incident: Incident, anchor: str = "") -> Any:
    url = reverse("incident-detail", args=[incident.project.slug, incident.number])
    return redirect(url + (f"#{anchor}" if anchor else ""))


def _version(request) -> int | None:  # noqa: ANN001
    return ascii_int(request.POST.get("version", ""))


# --- List, open, suggestions ------------------------------------------------------------------


@login_required
@require_GET
def incident_list(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug)
    request.project = project
    rows = (
        Incident.objects.filter(project=project)
        .select_related("commander")
        .prefetch_related("environments")
    )
    open_incidents = list(rows.open().order_by("severity", "-started_at")[:100])
    recent = list(rows.exclude(status__in=Incident.OPEN_STATUSES).order_by("-started_at")[:50])
    suggestions = list(
        IncidentSuggestion.objects.filter(
            project=project, incident__isnull=True, dismissed_at__isnull=True
        ).select_related("environment")[:20]
    )
    now = timezone.now()
    return render(
        request,
        "monitoring/incidents/list.html",
        {
            "project": project,
            "membership": membership,
            "can_write": membership.has_role(Membership.Role.ENGINEER),
            "open_incidents": [(i, selectors.clocks(i, now)) for i in open_incidents],
            "recent": recent,
            "suggestions": suggestions,
            "severities": SEVERITIES,
            "environments": list(project.environments.all()),
            "services": list(project.services.all()),
            "last_event_id": events.stream_cursor(project.topic),
        },
    )


@login_required
@require_POST
def incident_new(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug, Membership.Role.ENGINEER)
    try:
        incident = services.open_incident(
            request.user,
            membership,
            title=request.POST.get("title", ""),
            severity=request.POST.get("severity", ""),
            environments=request.POST.getlist("environments"),
            services=request.POST.getlist("services"),
            summary=request.POST.get("summary", ""),
            started_at=_local_moment(request.POST.get("started_at", "")),
        )
    except ValidationError as exc:
        _say(request, exc)
        return redirect("incident-list", slug=slug)
    messages.success(request, f"{incident.reference} opened.")
    return _back(incident)


def _local_moment(raw: str) -> Any:
    """A datetime-local field (no zone) read in the site's time zone; other text as given."""
    raw = (raw or "").strip()
    if not raw:
        return None
    parsed = parse_datetime(raw)
    if parsed is not None and timezone.is_naive(parsed):
        return timezone.make_aware(parsed)
    return parsed or raw


@login_required
@require_POST
def suggestion_open(request, slug: str, suggestion_id: int):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug, Membership.Role.ENGINEER)
    suggestion = IncidentSuggestion.objects.filter(project=project, pk=suggestion_id).first()
    if suggestion is None:
        raise Http404
    try:
        incident = auto.open_suggestion(request.user, membership, suggestion)
    except ValidationError as exc:
        _say(request, exc)
        return redirect("incident-list", slug=slug)
    return _back(incident)


@login_required
@require_POST
def suggestion_dismiss(request, slug: str, suggestion_id: int):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug, Membership.Role.ENGINEER)
    suggestion = IncidentSuggestion.objects.filter(project=project, pk=suggestion_id).first()
    if suggestion is None:
        raise Http404
    auto.dismiss_suggestion(request.user, membership, suggestion)
    return redirect("incident-list", slug=slug)


# --- The incident page ------------------------------------------------------------------------


def _kinds(request) -> set[str] | None:  # noqa: ANN001
    kinds = {k for k in request.GET.getlist("kind") if k in timeline.FILTER_KINDS}
    return kinds or None


def _before(request) -> datetime | None:  # noqa: ANN001
    raw = request.GET.get("before", "")
    parsed = parse_datetime(raw) if raw else None
    return parsed if parsed and timezone.is_aware(parsed) else None


def _live_context(request, incident: Incident, membership: Membership) -> dict[str, Any]:  # noqa: ANN001
    kinds = _kinds(request)
    env_ids = selectors.environment_ids(incident)
    items, more = timeline.merged(
        incident, environment_ids=env_ids, before=_before(request), kinds=kinds
    )
    can_write = membership.has_role(Membership.Role.ENGINEER)
    writable = can_write and incident.status != Incident.Status.CLOSED
    suspects = incident_hooks.suspects(
        incident.project_id, env_ids, incident.started_at, incident.started_at
    )
    edit_prefix = ""
    if writable:
        edit_prefix = reverse("incident-detail", args=[incident.project.slug, incident.number])
        edit_prefix += "entries/"
    return {
        "items_html": timeline.render_items(
            items,
            edit_url_prefix=edit_prefix,
            csrf_token=get_token(request) if writable else "",
            user_id=request.user.pk,
        ),
        "project": incident.project,
        "incident": incident,
        "membership": membership,
        "can_write": can_write and incident.status != Incident.Status.CLOSED,
        "clocks": selectors.clocks(incident),
        "suspects": suspects,
        "suspects_html": timeline.render_suspects(
            suspects,
            rollback_url=reverse("incident-rollback", args=[incident.project.slug, incident.number])
            if writable
            else "",
            csrf_token=get_token(request) if writable else "",
        ),
        "items": items,
        "older_before": items[0].occurred_at.isoformat() if more and items else "",
        "kinds": kinds or set(),
        "filter_kinds": timeline.FILTER_KINDS,
        "user_id": request.user.pk,
    }


@login_required
@require_GET
def incident_detail(request, slug: str, number: int):  # noqa: ANN001, ANN201
    incident, membership = incident_for(request, slug, number)
    context = _live_context(request, incident, membership)
    if request.htmx:
        return render(request, "monitoring/incidents/_live.html", context)
    context.update(
        {
            "last_event_id": events.stream_cursor(incident.topic),
            "project_event_id": events.stream_cursor(incident.project.topic),
            "statuses": incident.allowed_moves(),
            "severities": SEVERITIES,
            "person_kinds": TimelineEntry.PERSON_KINDS,
            "environments": list(incident.project.environments.all()),
            "services": list(incident.project.services.all()),
            "incident_env_ids": set(selectors.environment_ids(incident)),
            "incident_service_ids": {s.pk for s in incident.services.all()},
            "has_postmortem": Postmortem.objects.filter(incident=incident).exists(),
        }
    )
    return render(request, "monitoring/incidents/detail.html", context)


@login_required
@require_POST
def incident_acknowledge(request, slug: str, number: int):  # noqa: ANN001, ANN201
    incident, membership = incident_for(request, slug, number, Membership.Role.ENGINEER)
    try:
        services.acknowledge_incident(request.user, membership, incident, version=None)
    except (ValidationError, Conflict) as exc:
        _say(request, exc)
    nxt = request.POST.get("next", "")
    if nxt == "oncall":
        return redirect("incident-oncall", slug=slug)
    return _back(incident)


@login_required
@require_POST
def incident_status(request, slug: str, number: int):  # noqa: ANN001, ANN201
    incident, membership = incident_for(request, slug, number, Membership.Role.ENGINEER)
    try:
        incident = services.change_status(
            request.user,
            membership,
            incident,
            request.POST.get("status", ""),
            request.POST.get("message", ""),
            version=_version(request),
        )
    except (ValidationError, Conflict) as exc:
        _say(request, exc)
        return _back(incident)
    if incident.status == Incident.Status.RESOLVED:
        messages.success(
            request, f"{incident.reference} resolved; its postmortem is prefilled from the record."
        )
        return redirect("incident-postmortem", slug=slug, number=number)
    return _back(incident)


@login_required
@require_POST
def incident_edit(request, slug: str, number: int):  # noqa: ANN001, ANN201
    incident, membership = incident_for(request, slug, number, Membership.Role.ENGINEER)
    changes: dict[str, Any] = {}
    for field in ("title", "summary", "severity", "commander"):
        if field in request.POST:
            changes[field] = request.POST[field]
    if "started_at" in request.POST and request.POST["started_at"].strip():
        changes["started_at"] = _local_moment(request.POST["started_at"])
    if "environments" in request.POST:
        changes["environments"] = request.POST.getlist("environments")
    if request.POST.get("services_sent"):
        changes["services"] = request.POST.getlist("services")
    try:
        services.update_incident(
            request.user, membership, incident, version=_version(request), **changes
        )
    except (ValidationError, Conflict) as exc:
        _say(request, exc)
    return _back(incident)


@login_required
@require_POST
def incident_entry(request, slug: str, number: int):  # noqa: ANN001, ANN201
    incident, membership = incident_for(request, slug, number, Membership.Role.ENGINEER)
    try:
        services.add_timeline_entry(
            request.user,
            membership,
            incident,
            kind=request.POST.get("kind", ""),
            text=request.POST.get("text", ""),
            occurred_at=_local_moment(request.POST.get("occurred_at", "")),
        )
    except ValidationError as exc:
        _say(request, exc)
    if request.POST.get("next") == "oncall":
        return redirect("incident-oncall", slug=slug)
    if request.htmx:
        return HttpResponse(status=204)
    return _back(incident, "timeline")


@login_required
@require_POST
def entry_edit(request, slug: str, number: int, entry_id: int):  # noqa: ANN001, ANN201
    incident, membership = incident_for(request, slug, number, Membership.Role.ENGINEER)
    entry = TimelineEntry.objects.filter(incident=incident, pk=entry_id).first()
    if entry is None:
        raise Http404
    try:
        services.edit_timeline_entry(
            request.user,
            membership,
            entry,
            text=request.POST.get("text", ""),
            occurred_at=_local_moment(request.POST.get("occurred_at", "")),
        )
    except ValidationError as exc:
        _say(request, exc)
    return _back(incident, "timeline")


@login_required
@require_POST
def incident_rollback(request, slug: str, number: int):  # noqa: ANN001, ANN201
    incident, membership = incident_for(request, slug, number, Membership.Role.ENGINEER)
    try:
        url = services.roll_back_suspect(
            request.user,
            membership,
            incident,
            suspect=request.POST.get("suspect", ""),
            reason=request.POST.get("reason", ""),
        )
    except (ValidationError, Conflict) as exc:
        _say(request, exc)
    else:
        messages.success(request, "Rollback requested; it runs on a worker now.")
        if request.POST.get("next") == "oncall":
            return redirect("incident-oncall", slug=slug)
        if request.POST.get("follow"):
            return redirect(url)
    if request.POST.get("next") == "oncall":
        return redirect("incident-oncall", slug=slug)
    return _back(incident, "suspects")


@login_required
@require_GET
def timeline_markdown(request, slug: str, number: int):  # noqa: ANN001, ANN201
    incident, _ = incident_for(request, slug, number)
    items, _more = timeline.merged(incident, kinds=_kinds(request), limit=None)
    response = HttpResponse(
        timeline.as_markdown(incident, items), content_type="text/markdown; charset=utf-8"
    )
    response["Content-Disposition"] = (
        f'attachment; filename="{incident.project.slug}-{incident.reference}-timeline.md"'
    )
    return response


# --- Postmortem -------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def incident_postmortem(request, slug: str, number: int):  # noqa: ANN001, ANN201
    incident, membership = incident_for(request, slug, number)
    postmortem = Postmortem.objects.filter(incident=incident).select_related("reviewed_by").first()
    if request.method == "POST":
        from releasecenter.access import require_role

        require_role(membership, Membership.Role.ENGINEER)
        if postmortem is None:
            raise Http404
        action = request.POST.get("action", "save")
        try:
            if action == "save":
                postmortems.update_postmortem(
                    request.user,
                    membership,
                    postmortem,
                    version=_version(request),
                    **{f: request.POST.get(f, "") for f in postmortems.TEXT_FIELDS},
                )
                messages.success(request, "Postmortem saved.")
            elif action == "review":
                postmortems.mark_reviewed(request.user, membership, postmortem)
                messages.success(request, "Postmortem marked reviewed.")
            elif action == "add_action":
                postmortems.add_action_item(
                    request.user,
                    membership,
                    postmortem,
                    text=request.POST.get("text", ""),
                    owner=request.POST.get("owner") or None,
                    due_date=request.POST.get("due_date") or None,
                )
            elif action in ("done", "reopen"):
                item = ActionItem.objects.filter(
                    postmortem=postmortem, pk=request.POST.get("item", "0") or 0
                ).first()
                if item is None:
                    raise Http404
                postmortems.complete_action_item(
                    request.user, membership, item, done=action == "done"
                )
        except (ValidationError, Conflict, PermissionDenied) as exc:
            _say(request, exc)
        return redirect("incident-postmortem", slug=slug, number=number)
    members = [
        m.user for m in Membership.objects.filter(project=incident.project).select_related("user")
    ]
    return render(
        request,
        "monitoring/incidents/postmortem.html",
        {
            "project": incident.project,
            "incident": incident,
            "membership": membership,
            "postmortem": postmortem,
            "actions": list(postmortem.actions.select_related("owner")) if postmortem else [],
            "members": members,
            "can_write": membership.has_role(Membership.Role.ENGINEER),
            "can_review": membership.has_role(Membership.Role.LEAD),
            "needs_review": incident.severity in ("P0", "P1"),
            "today": timezone.localdate(),
        },
    )


@login_required
@require_GET
def postmortem_markdown(request, slug: str, number: int):  # noqa: ANN001, ANN201
    incident, _ = incident_for(request, slug, number)
    text = postmortems.as_markdown(incident)
    if text is None:
        raise Http404("No postmortem yet.")
    response = HttpResponse(text, content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="{incident.project.slug}-{incident.reference}-postmortem.md"'
    )
    return response


# --- On-call ----------------------------------------------------------------------------------


@login_required
@require_GET
def oncall(request, slug: str):  # noqa: ANN001, ANN201
    """One page for a phone at 3 a.m.: my open incidents with their clocks, what changed in each
    environment in the last 24 hours, and the one-tap actions."""
    project, membership = project_for(request.user, slug)
    request.project = project
    now = timezone.now()
    rows = list(
        Incident.objects.open()
        .filter(project=project)
        .select_related("commander")
        .prefetch_related("environments", "participants")
        .order_by("severity", "-started_at")[:50]
    )
    mine = [
        i
        for i in rows
        if i.commander_id in (None, request.user.pk)
        or any(p.pk == request.user.pk for p in i.participants.all())
    ]
    others = [i for i in rows if i not in mine]
    environments = list(project.environments.all())
    env_ids = [e.pk for e in environments]
    changes = incident_hooks.timeline(
        project.pk, env_ids, now - timedelta(hours=24), None, limit=60
    )
    by_env: dict[str, list] = {e.name: [] for e in environments}
    for entry in changes:
        by_env.setdefault(entry.environment, []).append(entry)
    first = mine[0] if mine else None
    suspects = []
    if first is not None:
        suspects = [s for s in selectors.suspects(first) if s.can_roll_back][:3]
    return render(
        request,
        "monitoring/incidents/oncall.html",
        {
            "project": project,
            "membership": membership,
            "can_write": membership.has_role(Membership.Role.ENGINEER),
            "mine": [(i, selectors.clocks(i, now)) for i in mine],
            "others": [(i, selectors.clocks(i, now)) for i in others],
            "first": first,
            "suspects": suspects,
            "changes": [(name, entries[:8]) for name, entries in by_env.items()],
            "last_event_id": events.stream_cursor(project.topic),
        },
    )


# --- Severity policy --------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def incident_policy(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug)
    request.project = project
    if request.method == "POST":
        from releasecenter.access import require_role

        require_role(membership, Membership.Role.ADMIN)
        try:
            if request.POST.get("what") == "auto":
                environment = Environment.objects.filter(
                    project=project, name=request.POST.get("environment", "")
                ).first()
                if environment is None:
                    raise ValidationError({"environment": "No such environment in this project."})
                auto.set_policy(
                    request.user,
                    membership,
                    environment,
                    mode=request.POST.get("mode", ""),
                    severity=request.POST.get("severity", ""),
                )
            else:
                services.set_severity_policy(
                    request.user,
                    membership,
                    request.POST.get("severity", ""),
                    acknowledge_seconds=_duration(
                        request.POST.get("acknowledge", ""), "acknowledge"
                    ),
                    update_seconds=_duration(request.POST.get("update", ""), "update"),
                )
            messages.success(request, "Policy saved.")
        except ValidationError as exc:
            _say(request, exc)
        return redirect("incident-policy", slug=slug)
    return render(
        request,
        "monitoring/incidents/policy.html",
        {
            "project": project,
            "membership": membership,
            "can_edit": membership.has_role(Membership.Role.ADMIN),
            "rules": list(services.rules_for(project).values()),
            "auto_policies": auto.policies_for(project),
            "modes": auto.AutoIncidentPolicy.Mode.choices,
            "severities": SEVERITIES,
        },
    )


_UNITS = {"": 60, "s": 1, "m": 60, "h": 3600}


def _duration(raw: str, field: str) -> int | None:
    """Seconds from the form's "15", "15m", "90s" or "2h" (a bare number is minutes); empty is
    None, "by the next working day"."""
    raw = (raw or "").strip().lower()
    if raw == "":
        return None
    unit = raw[-1] if raw[-1] in "smh" else ""
    number = ascii_int(raw[: len(raw) - len(unit)].strip())
    if number is None:
        raise ValidationError(
            {
                field: 'Give a duration such as "90s", "15m" or "2h" (a bare number is minutes), '
                "or leave empty for the next working day."
            }
        )
    return number * _UNITS[unit]
