"""On-call pages: schedules and who is on call, a schedule's four-week calendar, the channels with
their deliveries, and the public status page. Thin: the services write, these read and render."""

from __future__ import annotations

import calendar as calendar_module
from collections import defaultdict
from datetime import datetime, timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import Http404, HttpResponse, HttpResponseNotModified
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from releasecenter.access import membership_for, project_for, require_role
from releasecenter.models import Membership

from ..incidents.models import Incident, TimelineEntry
from ..lib import rotation as rot
from . import escalation
from . import schedules as schedule_services
from . import status_page as pages
from .models import ChannelMessage, DeliveryAttempt, NotificationChannel, Schedule, StatusPage

RECENT_MESSAGES = 30


@login_required
@require_GET
def oncall_index(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug)
    request.project = project
    now = timezone.now()
    channels = list(NotificationChannel.objects.filter(project=project))
    recent = list(
        ChannelMessage.objects.filter(project=project)
        .select_related("channel")
        .order_by("-created_at", "-id")[:RECENT_MESSAGES]
    )
    tries: dict[int, list[DeliveryAttempt]] = defaultdict(list)
    for attempt in DeliveryAttempt.objects.filter(message__in=recent).order_by("number"):
        tries[attempt.message_id].append(attempt)
    return render(
        request,
        "monitoring/oncall/index.html",
        {
            "project": project,
            "membership": membership,
            "on_call": schedule_services.project_on_call(project, now),
            "channels": channels,
            "deliveries": [(m, tries[m.pk]) for m in recent],
            "now": now,
        },
    )


@login_required
@require_GET
def schedule_calendar(request, slug: str, schedule_id: int):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug)
    request.project = project
    schedule = Schedule.objects.filter(project=project, pk=schedule_id).first()
    if schedule is None:
        raise Http404("No such schedule.")
    zone = rot.parse_time_zone(schedule.time_zone)
    today = timezone.now().astimezone(zone).date()
    start = datetime.combine(today, datetime.min.time(), tzinfo=zone)
    days = [today + timedelta(days=i) for i in range(schedule_services.CALENDAR_DAYS)]
    shifts = schedule_services.calendar(schedule, start, days=schedule_services.CALENDAR_DAYS)
    # Each local day lists the shifts that touch it, with local start and end times.
    by_day: dict = {day: [] for day in days}
    for shift in shifts:
        local_start, local_end = shift.starts_at.astimezone(zone), shift.ends_at.astimezone(zone)
        day = local_start.date()
        while day <= local_end.date() and day in by_day:
            if not (day == local_end.date() and local_end.time() == datetime.min.time()):
                by_day[day].append((shift, local_start, local_end))
            day += timedelta(days=1)
    weeks = [days[i : i + 7] for i in range(0, len(days), 7)]
    return render(
        request,
        "monitoring/oncall/calendar.html",
        {
            "project": project,
            "schedule": schedule,
            "handoff_day": calendar_module.day_name[schedule.handoff_weekday],
            "weeks": [[(day, by_day[day]) for day in week] for week in weeks],
            "members": [m.user for m in schedule.members.select_related("user")],
            "project_members": [
                m.user
                for m in project.memberships.select_related("user").order_by("user__username")
            ],
            "overrides": schedule.overrides.filter(ends_at__gt=timezone.now()).select_related(
                "user"
            ),
        },
    )


@require_GET
def status_page(request, slug: str):  # noqa: ANN001, ANN201
    """Public, no login. A disabled page and an unknown project are the same 404."""
    rendered = pages.render(slug)
    if rendered is None:
        raise Http404("No such status page.")
    body, etag = rendered
    if etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
        response = HttpResponseNotModified()
    else:
        response = HttpResponse(body, content_type="text/html; charset=utf-8")
    response["ETag"] = etag
    patch_cache_control(response, public=True, max_age=pages.CACHE_SECONDS)
    return response


# --- One-tap acknowledge ---------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def acknowledge_link(request, token: str):  # noqa: ANN001, ANN201
    """The link from a page. GET shows what it acknowledges and one big button (a link preview
    or a mail scanner fetching it must not acknowledge); POST acknowledges, once.

    A link that is not ours, or an incident of a project the user is not in: 404. Expired, used,
    or the incident no longer open: 403 with the reason. Not logged in: the login page first
    (login_required), then back here.
    """
    try:
        page = escalation.page_for_token(token)
    except escalation.LinkRefused as exc:
        return _refused(request, str(exc))
    if page is None:
        raise Http404("No such link.")
    incident = page.incident
    membership = membership_for(request.user, incident.project_id)
    if membership is None:
        raise Http404("No such link.")
    request.project = incident.project
    context = {"incident": incident, "project": incident.project, "page": page}
    if incident.acknowledged_at is not None and incident.is_open:
        return render(request, "monitoring/oncall/acknowledged.html", context)
    reason = escalation.link_state(page)
    if reason:
        return _refused(request, reason)
    if request.method == "POST":
        try:
            escalation.acknowledge_by_link(request.user, membership, page)
        except escalation.LinkRefused as exc:
            return _refused(request, str(exc))
        incident.refresh_from_db()
        return render(request, "monitoring/oncall/acknowledged.html", context)
    return render(request, "monitoring/oncall/acknowledge.html", context)


def _refused(request, reason: str):  # noqa: ANN001, ANN202
    return render(request, "monitoring/oncall/link_refused.html", {"reason": reason}, status=403)


# --- Forms: overrides, the status page's settings and what it shows of incidents -------------------


def _local(value: str, zone, field: str) -> datetime:  # noqa: ANN001
    try:
        naive = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValidationError({field: "A date and time like 2026-03-24T18:00."}) from None
    if naive.tzinfo is not None:
        return naive
    return naive.replace(tzinfo=zone)


def _say_errors(request, exc: ValidationError) -> None:  # noqa: ANN001
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            messages.error(request, f"{field}: {' '.join(errors)}")
    else:
        messages.error(request, " ".join(exc.messages))


@login_required
@require_POST
def override_add(request, slug: str, schedule_id: int):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug, Membership.Role.ENGINEER)
    schedule = Schedule.objects.filter(project=project, pk=schedule_id).first()
    if schedule is None:
        raise Http404("No such schedule.")
    zone = rot.parse_time_zone(schedule.time_zone)
    try:
        schedule_services.add_override(
            request.user,
            membership,
            schedule,
            username=request.POST.get("user", ""),
            starts_at=_local(request.POST.get("starts_at", ""), zone, "starts_at"),
            ends_at=_local(request.POST.get("ends_at", ""), zone, "ends_at"),
            reason=request.POST.get("reason", ""),
        )
    except ValidationError as exc:
        _say_errors(request, exc)
    else:
        messages.success(request, "Override added.")
    return redirect("oncall-calendar", slug=project.slug, schedule_id=schedule.pk)


def _groups_text(page: StatusPage | None) -> str:
    if page is None:
        return ""
    return "\n".join(
        f"{group.name}: {', '.join(sorted(s.name for s in group.services.all()))}"
        for group in page.groups.prefetch_related("services")
    )


def _parse_groups(text: str) -> list[dict]:
    groups = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, services = line.partition(":")
        if not sep:
            raise ValidationError({"groups": f"Line {n}: write 'Group name: service, service'."})
        groups.append(
            {
                "name": name.strip(),
                "services": [s.strip() for s in services.split(",") if s.strip()],
            }
        )
    return groups


@login_required
@require_http_methods(["GET", "POST"])
def status_settings(request, slug: str):  # noqa: ANN001, ANN201
    """The public status page's settings (admins) and what it shows of incidents (leads publish
    an incident under a public title; authors make their own updates public)."""
    project, membership = project_for(request.user, slug)
    request.project = project
    page = StatusPage.objects.filter(project=project).select_related("environment").first()
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "settings":
                require_role(membership, Membership.Role.ADMIN)
                pages.configure(
                    request.user,
                    membership,
                    enabled=request.POST.get("enabled") == "on",
                    title=request.POST.get("title", ""),
                    environment=request.POST.get("environment") or None,
                    groups=_parse_groups(request.POST.get("groups", "")),
                )
                messages.success(request, "Status page saved.")
            elif action == "publish":
                incident = Incident.objects.filter(
                    project=project, pk=request.POST.get("incident") or 0
                ).first()
                if incident is None:
                    raise Http404("No such incident.")
                pages.publish_incident(
                    request.user, membership, incident, title=request.POST.get("title", "")
                )
                messages.success(request, f"{incident.reference} is on the status page.")
            elif action == "update":
                entry = TimelineEntry.objects.filter(
                    incident__project=project, pk=request.POST.get("entry") or 0
                ).first()
                if entry is None:
                    raise Http404("No such entry.")
                pages.mark_update_public(request.user, membership, entry)
                messages.success(request, "The update is public.")
        except ValidationError as exc:
            _say_errors(request, exc)
        return redirect("oncall-status-settings", slug=project.slug)
    since = timezone.now() - timedelta(days=pages.DAYS)
    incidents = list(
        Incident.objects.filter(project=project)
        .filter(Q(status__in=Incident.OPEN_STATUSES) | Q(started_at__gte=since))
        .select_related("public")
        .order_by("-started_at")[:30]
    )
    my_updates = list(
        TimelineEntry.objects.filter(
            incident__in=incidents,
            author=request.user,
            source=TimelineEntry.Source.PERSON,
            kind=TimelineEntry.Kind.UPDATE,
        )
        .select_related("incident", "public")
        .order_by("-occurred_at")[:50]
    )
    return render(
        request,
        "monitoring/oncall/status_settings.html",
        {
            "project": project,
            "membership": membership,
            "page": page,
            "groups_text": _groups_text(page),
            "environments": list(project.environments.all()),
            "incidents": incidents,
            "my_updates": my_updates,
            "can_admin": membership.has_role(Membership.Role.ADMIN),
            "can_publish": membership.has_role(Membership.Role.LEAD),
        },
    )
