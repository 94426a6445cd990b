"""Release pages: list, create, the release page with its live decision, and policy editing."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import CharField, Prefetch, Q, Value
from django.db.models.functions import Cast, Concat
from django.http import Http404, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.template import TemplateDoesNotExist
from django.template.loader import get_template
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from checklists.selectors import run_progress as progress_of
from releasecenter import events, subjects
from releasecenter.access import object_for, project_for
from releasecenter.models import AuditEvent, Membership
from releasecenter.services import Conflict
from releasecenter.templatetags.releasecenter import describe_event
from releasecenter.validation import ascii_int

from . import release_forms as forms
from . import render as release_render
from . import services
from .decision import evaluate, gather_release, upcoming_freeze
from .models import FollowUp, Release, ReleaseTarget, Signoff, TimeWindow

PAGE_SIZE = 25
# What monitoring publishes when a check's state changes (see monitoring.services._move_state).
CHECK_STATE_VERBS = ("check.failing", "check.recovered")


def _release_for(request, slug: str, release_id: int):  # noqa: ANN001, ANN202
    release, membership = object_for(
        request.user, Release.objects.select_related("project", "created_by"), pk=release_id
    )
    if release.project.slug != slug:
        raise Http404
    request.project = release.project
    return release, membership


def _errors(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    return str(exc)


@login_required
@require_GET
def release_list(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug)
    request.project = project
    services.expire_lapsed_approvals(project=project)
    form = forms.ReleaseFilterForm(request.GET or None)
    releases = Release.objects.filter(project=project).select_related("created_by")
    form.is_valid()  # a bad filter is reported on the page; the valid ones still apply
    chosen = getattr(form, "cleaned_data", {})
    # One filter() call, so environment and status must hold for the same target.
    lookup = {}
    if chosen.get("environment"):
        lookup["targets__environment__name"] = chosen["environment"]
    if chosen.get("status"):
        lookup["targets__status"] = chosen["status"]
    releases = releases.filter(**lookup)
    releases = releases.distinct().prefetch_related(
        Prefetch("targets", queryset=ReleaseTarget.objects.select_related("environment"))
    )
    page = Paginator(releases, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "deployments/release_list.html",
        {
            "project": project,
            "membership": membership,
            "page": page,
            "filter_form": form,
            "environments": project.environments.all(),
            "query": query.urlencode(),
            "can_create": membership.has_role(Membership.Role.ENGINEER),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def release_new(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug, Membership.Role.ENGINEER)
    request.project = project
    form = forms.ReleaseForm(request.POST or None, project=project)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        chosen = data.pop("environments")
        try:
            release = services.create_release(
                request.user,
                membership,
                **data,
                environments=[e.name for e in chosen] if chosen else None,
            )
        except ValidationError as exc:
            form.add_error(None, exc.messages)
        except Conflict as exc:
            form.add_error("version", str(exc))
        else:
            messages.success(request, f"Release {release.version} created.")
            return redirect("release-detail", slug=slug, release_id=release.pk)
    return render(
        request,
        "deployments/release_form.html",
        {"project": project, "form": form, "title": "New release"},
    )


@login_required
@require_http_methods(["GET", "POST"])
def release_edit(request, slug: str, release_id: int):  # noqa: ANN001, ANN201
    release, membership = _release_for(request, slug, release_id)
    form = forms.ReleaseEditForm(request.POST or None, instance=release)
    if request.method == "POST" and form.is_valid():
        try:
            before_commit = Release.objects.values_list("commit_sha", flat=True).get(pk=release.pk)
            updated = services.update_release(
                request.user, membership, release, **form.cleaned_data
            )
        except (ValidationError, PermissionDenied) as exc:
            form.add_error(None, _errors(exc))
        except Conflict as exc:
            form.add_error("version", str(exc))
        else:
            note = ""
            if updated.commit_sha != before_commit:
                note = (
                    " The commit changed: what was proven about the old one no longer counts "
                    "(see what it reopened below)."
                )
            messages.success(request, "Release updated." + note)
            return redirect("release-detail", slug=slug, release_id=release.pk)
    return render(
        request,
        "deployments/release_form.html",
        {
            "project": release.project,
            "form": form,
            "release": release,
            "title": f"Edit release {release.version}",
        },
    )


def _deploy_button_template() -> str | None:
    try:
        get_template("deployments/_deploy_button.html")
    except TemplateDoesNotExist:
        return None
    return "deployments/_deploy_button.html"


def _column(target: ReleaseTarget, snapshot, membership: Membership, now, run_progress):  # noqa: ANN001, ANN202
    """Everything one environment's column shows, from one snapshot."""
    decision = evaluate(snapshot, now)
    signoffs = [s for s in target.signoffs.all()]
    roles = []
    for role in snapshot.roles:
        roles.append(
            {
                "role": role.role,
                "quorum": role.quorum,
                "count": len(role.approvals),
                "signoffs": [s for s in signoffs if s.role == role.role],
                "can_sign": role.role in (membership.signoff_capacities or []),
            }
        )
    mine = next((s for s in signoffs if s.user_id == membership.user_id and s.active), None)
    runs = list(target.runs.all())
    gate_codes = {"gate_no_go", "gate_conditional", "gate_warning"}
    return {
        "target": target,
        "decision": decision,
        "upcoming_freeze": _announce_freeze(snapshot, now),
        # Gate blockers are listed once, under Gates; the reasons list names the rest.
        "other_reasons": [r for r in decision.reasons if r.code not in gate_codes],
        "open_gate_count": sum(1 for r in decision.reasons if r.code in gate_codes),
        "open_gates": [g for g in snapshot.gates if g.state == "open"],
        "closed_gates": [g for g in snapshot.gates if g.state != "open"],
        "acceptances": [a for a in target.risk_acceptances.all() if a.revoked_at is None],
        "roles": roles,
        "my_signoff": mine,
        # The deploy gate leaves the requester's own approval out unless the project allows it.
        "own_approval_excluded": mine is not None
        and mine.decision == Signoff.Decision.APPROVE
        and not target.release.project.requester_counts_for_quorum,
        "runs": [(run, run_progress.get(run.pk, (0, 0))) for run in runs],
        "overrides": list(target.overrides.all()),
        "production": snapshot.production,
        "my_roles": [
            r.role for r in snapshot.roles if r.role in (membership.signoff_capacities or [])
        ],
    }


def _announce_freeze(snapshot, now) -> str:  # noqa: ANN001
    """ "Holiday freeze begins in 3 days (Sun 2026-12-20 00:00 CET)", or "" when no freeze is
    near."""
    upcoming = upcoming_freeze(snapshot, now)
    if upcoming is None:
        return ""
    name, start = upcoming
    return f"{name} begins in {_duration(start - now)} ({start:%a %Y-%m-%d %H:%M %Z})"


def _duration(delta: timedelta) -> str:
    minutes = max(1, round(delta.total_seconds() / 60))
    for unit, size in (("day", 1440), ("hour", 60), ("minute", 1)):
        if minutes >= size:
            count = minutes // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return "1 minute"


def _check_changes(release: Release, environment_ids: list[int]) -> Q:
    """The state changes of the health checks of the release's environments since it was
    created, as monitoring publishes them on the project's topic. One subquery names the
    checks, so the timeline stays one query however many checks or changes there are."""
    from monitoring.models import Check

    checks = (
        Check.objects.filter(environment_id__in=environment_ids)
        .annotate(key=Cast("pk", CharField()))
        .values("key")
    )
    return Q(
        topic=release.project.topic,
        verb__in=CHECK_STATE_VERBS,
        object_type=Check._meta.label_lower,
        object_id__in=checks,
        created_at__gte=release.created_at,
    )


def _deployment_changes(release: Release) -> Q:
    """The deployments of the release asked for and changing status, from their own topics
    (one subquery, however many deployments)."""
    from .models import Deployment

    topics = (
        Deployment.objects.filter(release=release)
        .annotate(key=Concat(Value("deployment:"), Cast("pk", CharField())))
        .values("key")
    )
    return Q(topic__in=topics, verb__in=["deployment.created", "deployment.status_changed"])


def _timeline(rows, project_slug: str) -> list[dict]:  # noqa: ANN001
    """The timeline's lines, formatted here once: a page lists up to 100 events, and through
    template filters and branches they were a sixth of the page's time."""
    entries = []
    rows = list(rows)
    # Every other line names its subject and links to it (releasecenter.subjects).
    lines = subjects.describe([e for e in rows if e.verb not in CHECK_STATE_VERBS])
    for event in rows:
        if event.pk in lines and lines[event.pk] is None:
            continue
        if event.pk in lines:
            text = lines[event.pk].html()
        elif event.verb in CHECK_STATE_VERBS:
            data = event.data or {}
            state = "is failing" if event.verb == "check.failing" else "recovered"
            summary = f": {data['summary']}" if data.get("summary") else ""
            text = format_html(
                'health check <a href="{}">{}</a> in {} {}{}',
                reverse("check-detail", args=[project_slug, event.object_id]),
                data.get("name", ""),
                data.get("environment", ""),
                state,
                summary,
            )
        else:
            text = describe_event(event)
        at = timezone.localtime(event.created_at)
        entries.append(
            {
                "iso": event.created_at.isoformat(),
                "when": at.strftime("%Y-%m-%d %H:%M:%S"),
                "actor": event.actor.username if event.actor_id else "system",
                "verb": event.verb,
                "text": text,
            }
        )
    return entries


def _detail_context(release: Release, membership: Membership, csrf_token: str) -> dict:
    now = timezone.now()
    targets = list(
        release.targets.select_related("environment", "release__project").prefetch_related(
            Prefetch("signoffs", queryset=Signoff.objects.select_related("user")),
            "risk_acceptances__accepted_by",
            "overrides__overridden_by",
            "runs",
        )
    )
    run_ids = [run.pk for t in targets for run in t.runs.all()]
    run_progress = progress_of(run_ids) if run_ids else {}
    run_topics = [f"run:{pk}" for pk in run_ids]
    snapshots = gather_release(release, now)
    columns = [_column(t, snapshots[t.pk], membership, now, run_progress) for t in targets]
    is_lead = membership.has_role(Membership.Role.LEAD)
    args = [release.project.slug, release.pk]
    # Reversed once here, not per gate.
    gate_ctx = release_render.GateContext(
        is_lead=is_lead,
        csrf_token=csrf_token,
        accept_risk_url=reverse("release-accept-risk", args=args),
        acknowledge_url=reverse("release-acknowledge", args=args),
        default_expiry=(now + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M"),
        runs_url=reverse("checklist-runs", args=[release.project.slug]),
    )
    for column in columns:
        column["gates_html"] = release_render.gates(
            column["target"].environment.name,
            column["production"],
            column["open_gates"],
            column["closed_gates"],
            gate_ctx,
        )
    topics = [release.topic, *run_topics]
    timeline = (
        AuditEvent.objects.filter(
            Q(topic__in=topics)
            | _check_changes(release, [t.environment_id for t in targets])
            | _deployment_changes(release)
        )
        .select_related("actor")
        .order_by("-id")[:100]
    )
    timeline_entries = _timeline(timeline, release.project.slug)
    return {
        "commit_resets": [
            event.data
            for event in AuditEvent.objects.filter(
                topic=release.topic, verb="release.commit_reset", data__revision=release.revision
            ).order_by("id")
        ],
        "release": release,
        "project": release.project,
        "membership": membership,
        "is_lead": is_lead,
        "columns": columns,
        "timeline": timeline_entries,
        "timeline_html": release_render.timeline(timeline_entries),
        "follow_ups": release.follow_ups.select_related("resolved_by"),
        "run_topics": run_topics,
        "last_event_id": events.stream_cursor(*topics),
        "deploy_button": _deploy_button_template(),
        "urls": {"signoff": reverse("release-signoff", args=args)},
        "now": now,
    }


@login_required
@require_GET
def release_detail(request, slug: str, release_id: int):  # noqa: ANN001, ANN201
    release, membership = _release_for(request, slug, release_id)
    services.expire_lapsed_approvals(release=release)
    context = _detail_context(release, membership, get_token(request))
    if request.htmx:
        return render(request, "deployments/_release_live.html", context)
    return render(request, "deployments/release_detail.html", context)


def _action(request, slug: str, release_id: int, run):  # noqa: ANN001, ANN202
    """Run one release action from a form post; report its outcome as a flash message."""
    release, membership = _release_for(request, slug, release_id)
    try:
        outcome = run(release, membership)
    except (ValidationError, PermissionDenied, Conflict) as exc:
        messages.error(request, _errors(exc))
    else:
        if outcome:
            messages.success(request, outcome)
    return redirect("release-detail", slug=slug, release_id=release.pk)


@login_required
@require_POST
def release_submit(request, slug: str, release_id: int):  # noqa: ANN001, ANN201
    def run(release, membership):  # noqa: ANN001, ANN202
        services.submit_for_review(request.user, membership, release)
        return "Submitted for review."

    return _action(request, slug, release_id, run)


@login_required
@require_POST
def release_signoff(request, slug: str, release_id: int):  # noqa: ANN001, ANN201
    def run(release, membership):  # noqa: ANN001, ANN202
        form = forms.SignoffForm(request.POST)
        if not form.is_valid():
            raise ValidationError("Choose approve or reject; a comment is at most 2000 characters.")
        signoff = services.sign_off(request.user, membership, release, **form.cleaned_data)
        return f"Signed off as {signoff.role}: {signoff.get_decision_display().lower()}."

    return _action(request, slug, release_id, run)


@login_required
@require_POST
def release_withdraw(request, slug: str, release_id: int, signoff_id: int):  # noqa: ANN001, ANN201
    def run(release, membership):  # noqa: ANN001, ANN202
        signoff = Signoff.objects.filter(pk=signoff_id, target__release=release).first()
        if signoff is None:
            raise Http404
        services.withdraw_signoff(request.user, membership, signoff)
        return "Sign-off withdrawn."

    return _action(request, slug, release_id, run)


@login_required
@require_POST
def release_accept_risk(request, slug: str, release_id: int):  # noqa: ANN001, ANN201
    def run(release, membership):  # noqa: ANN001, ANN202
        form = forms.RiskAcceptanceForm(request.POST)
        if not form.is_valid():
            raise ValidationError(
                "Give a reason of at least 10 characters and an expiry date and time."
            )
        services.accept_risk(request.user, membership, release, **form.cleaned_data)
        return "Risk accepted."

    return _action(request, slug, release_id, run)


@login_required
@require_POST
def release_acknowledge(request, slug: str, release_id: int):  # noqa: ANN001, ANN201
    def run(release, membership):  # noqa: ANN001, ANN202
        form = forms.AcknowledgeForm(request.POST)
        if not form.is_valid():
            raise ValidationError("Name the warning to acknowledge.")
        services.acknowledge_warning(request.user, membership, release, **form.cleaned_data)
        return "Warning acknowledged."

    return _action(request, slug, release_id, run)


@login_required
@require_POST
def release_cancel(request, slug: str, release_id: int):  # noqa: ANN001, ANN201
    def run(release, membership):  # noqa: ANN001, ANN202
        environment = request.POST.get("environment", "")
        services.cancel_target(request.user, membership, release, environment)
        return f"Release cancelled in {environment}."

    return _action(request, slug, release_id, run)


@login_required
@require_POST
def release_follow_up(request, slug: str, release_id: int, follow_up_id: int):  # noqa: ANN001, ANN201
    def run(release, membership):  # noqa: ANN001, ANN202
        follow_up = FollowUp.objects.filter(pk=follow_up_id, release=release).first()
        if follow_up is None:
            raise Http404
        form = forms.FollowUpForm(request.POST)
        if not form.is_valid():
            raise ValidationError("Say what the review found.")
        services.resolve_follow_up(
            request.user, membership, follow_up, form.cleaned_data["resolution"]
        )
        return "Follow-up resolved."

    return _action(request, slug, release_id, run)


@login_required
@require_GET
def release_bundle(request, slug: str, release_id: int):  # noqa: ANN001, ANN201
    from .bundle import build_bundle

    release, _membership = _release_for(request, slug, release_id)
    data = build_bundle(release)
    response = HttpResponse(data, content_type="application/zip")
    response["Content-Disposition"] = (
        f'attachment; filename="{release.project.slug}-{release.version}-compliance.zip"'
    )
    return response


# --- Environment policy -----------------------------------------------------------------------


# Where a service's error about a policy belongs on the policy form.
_POLICY_ERROR_FIELDS = {
    "requirements": "signoff_roles",
    "min_notice": "min_notice_hours",
    "checklist_templates": "checklist_templates",
    "require_previous_verified": "require_previous_verified",
    "block_on_incidents": "block_on_incidents",
    "auto_rollback": "auto_rollback",
}


def _add_service_errors(form, exc: ValidationError) -> None:  # noqa: ANN001
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc.messages)
        return
    for key, errors in exc.message_dict.items():
        field = _POLICY_ERROR_FIELDS.get(key)
        form.add_error(field if field in form.fields else None, errors)


@login_required
@require_http_methods(["GET", "POST"])
def environment_policy(request, slug: str, environment: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug)
    request.project = project
    env = project.environments.filter(name=environment).first()
    if env is None:
        raise Http404
    from .models import EnvironmentPolicy

    policy = EnvironmentPolicy.objects.filter(environment=env).first() or EnvironmentPolicy(
        environment=env
    )
    requirements = list(env.signoff_requirements.all())
    initial = {
        "min_notice_hours": policy.min_notice.total_seconds() / 3600 if policy.min_notice else None,
        "signoff_roles": "\n".join(f"{r.role}: {r.quorum}" for r in requirements),
    }
    is_admin = membership.has_role(Membership.Role.ADMIN)
    action = request.POST.get("action") if request.method == "POST" else None
    form = forms.PolicyForm(
        request.POST if action == "policy" else None,
        instance=policy,
        initial=initial,
        project=project,
    )
    window_form = forms.TimeWindowForm(
        request.POST if action == "add-window" else None, prefix="window"
    )
    quorum_form = forms.RequesterQuorumForm(
        request.POST if action == "quorum-rule" else None,
        initial={"requester_counts_for_quorum": project.requester_counts_for_quorum},
        prefix="quorum",
    )
    if request.method == "POST":
        if not is_admin:
            raise PermissionDenied("Only project admins edit environment policies.")
        back = redirect("environment-policy", slug=slug, environment=env.name)
        if action == "policy" and form.is_valid():
            hours = form.cleaned_data["min_notice_hours"]
            try:
                services.save_environment_policy(
                    request.user,
                    membership,
                    env,
                    signoff_requirements=form.cleaned_data["signoff_roles"],
                    checklist_templates=list(form.cleaned_data["checklist_templates"]),
                    min_notice=timedelta(hours=hours) if hours else None,
                    **{
                        f: form.cleaned_data[f]
                        for f in (
                            "require_previous_verified",
                            "block_on_incidents",
                            "auto_rollback",
                        )
                    },
                )
            except ValidationError as exc:
                _add_service_errors(form, exc)
            else:
                messages.success(request, f"Policy of {env.name} saved.")
                return back
        elif action == "quorum-rule" and quorum_form.is_valid():
            services.set_requester_counts_for_quorum(
                request.user, membership, quorum_form.cleaned_data["requester_counts_for_quorum"]
            )
            messages.success(request, f"Quorum rule of {project.name} saved.")
            return back
        elif action == "add-window" and window_form.is_valid():
            try:
                services.add_time_window(request.user, membership, env, **window_form.cleaned_data)
            except ValidationError as exc:
                window_form.add_error(None, exc.messages)
            else:
                messages.success(request, "Window added.")
                return back
        elif action == "delete-window":
            window_id = ascii_int(request.POST.get("window"))
            window = (
                TimeWindow.objects.filter(pk=window_id, environment=env).first()
                if window_id is not None
                else None
            )
            if window is None:
                raise Http404
            services.delete_time_window(request.user, membership, window)
            messages.success(request, "Window removed.")
            return back
        elif action not in ("policy", "quorum-rule", "add-window"):
            return HttpResponse("Unknown action.", status=400, content_type="text/plain")
    return render(
        request,
        "deployments/environment_policy.html",
        {
            "project": project,
            "environment": env,
            "policy": policy,
            "form": form,
            "window_form": window_form,
            "quorum_form": quorum_form,
            "windows": env.time_windows.all(),
            "requirements": requirements,
            "is_admin": is_admin,
        },
        status=400 if request.method == "POST" else 200,
    )
