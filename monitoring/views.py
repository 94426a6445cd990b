"""Health pages: the grid of a project, a check's page with its chart, the check forms and an
environment's monitoring settings. Thin: services write, selectors read.

Charts are SVG drawn here on the server: no chart library, no inline script or style (the
Content-Security-Policy forbids both); SVG presentation attributes are not styles.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from releasecenter import events
from releasecenter.access import object_for, project_for
from releasecenter.models import Environment, Membership
from releasecenter.services import Conflict

from . import forms, heartbeats, probes, selectors, services
from .models import Check, PerformanceTarget, result_retention_days

GRID_PAGE_SIZE = 25
LIST_PAGE_SIZE = 50
FAILURES_PAGE_SIZE = 20


def _errors(form, exc: Exception) -> None:  # noqa: ANN001
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        for name, errors in exc.message_dict.items():
            form.add_error(name if name in form.fields else None, errors)
    elif isinstance(exc, ValidationError):
        form.add_error(None, exc.messages)
    else:
        form.add_error(None, str(exc))


def _check_for(request, slug: str, check_id: int, minimum: str = Membership.Role.VIEWER):  # noqa: ANN001, ANN202
    check, membership = object_for(
        request.user,
        Check.objects.select_related("project", "environment", "service", "parent"),
        minimum=minimum,
        pk=check_id,
    )
    if check.project.slug != slug:
        raise Http404
    request.project = check.project
    return check, membership


# --- SVG ------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def sparkline_svg(values: list[float | None], width: int = 96, height: int = 24) -> SafeString:
    """Hourly latency as a small line; gaps where an hour had no timed run.

    Built with plain string formatting (only numbers go in), since a page draws a hundred.
    """
    known = [v for v in values if v is not None]
    if not known:
        return mark_safe('<span class="muted spark-empty">no data</span>')  # noqa: S308
    top = max(known) or 1.0
    step = width / max(len(values) - 1, 1)
    scale = (height - 4) / top
    segments: list[list[str]] = [[]]
    for index, value in enumerate(values):
        if value is None:
            if segments[-1]:
                segments.append([])
            continue
        segments[-1].append(f"{index * step:.1f},{height - 2 - value * scale:.1f}")
    parts = []
    for segment in segments:
        if len(segment) > 1:
            parts.append(
                f'<polyline points="{" ".join(segment)}" fill="none" stroke="#2f6fdb" '
                'stroke-width="1.5"/>'
            )
        elif segment:
            x, y = segment[0].split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="1.5" fill="#2f6fdb"/>')
    return mark_safe(  # noqa: S308 - numbers only
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="Latency per hour, last 24 hours: {min(known):.0f} to '
        f'{top:.0f} ms">{"".join(parts)}</svg>'
    )


def response_chart_svg(
    points: list[tuple[datetime, float | None, bool]], since: datetime, until: datetime
) -> SafeString:
    """Response time of each run over the last day: a line through the answers, red marks
    where a run failed (at the bottom when it got no answer at all)."""
    if not points:
        return mark_safe('<p class="empty">No runs in the last 24 hours.</p>')  # noqa: S308
    width, height, left, right, top_pad, bottom = 640, 200, 48, 8, 10, 24
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    known = [p[1] for p in points if p[1] is not None]
    peak = max(known) if known else 1.0
    scale = _nice(peak)
    span = max((until - since).total_seconds(), 1.0)

    def x(at: datetime) -> float:
        return left + plot_w * min(max((at - since).total_seconds() / span, 0.0), 1.0)

    def y(value: float) -> float:
        return top_pad + plot_h - plot_h * min(value / scale, 1.0)

    line = " ".join(f"{_fmt(x(at))},{_fmt(y(v))}" for at, v, _ok in points if v is not None)
    failed = format_html_join(
        "",
        '<circle cx="{}" cy="{}" r="3.5" fill="#b3261e"><title>{} failed{}</title></circle>',
        (
            (
                _fmt(x(at)),
                _fmt(y(v) if v is not None else top_pad + plot_h),
                at.strftime("%H:%M:%S"),
                f" ({_fmt(v)} ms)" if v is not None else " (no response)",
            )
            for at, v, ok in points
            if not ok
        ),
    )
    grid_parts = []
    for fraction in (0, 0.5, 1):
        value = scale * fraction
        gy = _fmt(y(value))
        grid_parts.append(
            format_html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#ccd" stroke-width="0.5"/>'
                '<text x="{}" y="{}" font-size="10" text-anchor="end" fill="#667">{} ms</text>',
                left,
                width - right,
                gy,
                gy,
                left - 4,
                _fmt(float(gy) + 3),
                _fmt(value),
            )
        )
    time_labels = [
        format_html(
            '<text x="{}" y="{}" font-size="10" text-anchor="{}" fill="#667">{}</text>',
            _fmt(x(at)),
            height - 6,
            anchor,
            at.strftime("%d %H:%M"),
        )
        for at, anchor in ((since, "start"), (until, "end"))
    ]
    return format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="Response time over the '
        'last 24 hours: {} runs, {} failed, slowest {} ms">{}{}{}{}</svg>',
        width,
        height,
        len(points),
        sum(1 for p in points if not p[2]),
        _fmt(peak) if known else "–",
        mark_safe("".join(grid_parts)),  # noqa: S308 - each part is built with format_html
        format_html('<polyline points="{}" fill="none" stroke="#2f6fdb" stroke-width="1.5"/>', line)
        if line
        else "",
        failed,
        mark_safe("".join(time_labels)),  # noqa: S308 - each part is built with format_html
    )


def _nice(value: float) -> float:
    """A round upper bound for an axis: 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1.0
    power = 1.0
    while power * 10 <= value:
        power *= 10
    while power > value:
        power /= 10
    for factor in (1, 2, 5, 10):
        if value <= factor * power:
            return factor * power
    return 10 * power


# --- The Health page ------------------------------------------------------------------------


def _cell_renderer(project, can_edit: bool):  # noqa: ANN001, ANN202
    """Draw grid cells in Python: a page has a hundred of them, and the template engine would
    spend most of the page's time on them. URLs are reversed once, not per cell."""
    marker = 987654321
    detail = reverse("check-detail", args=[project.slug, marker]).replace(str(marker), "{}")
    listing = reverse("check-list", args=[project.slug])
    new = reverse("check-new", args=[project.slug])

    def render(service, cell) -> SafeString:  # noqa: ANN001
        env = cell.environment.name
        service_attr = format_html(' data-service="{}"', service.name) if service else ""
        if not cell.checks:
            add = ""
            if can_edit:
                query = urlencode(
                    {"environment": env, **({"service": service.name} if service else {})}
                )
                add = format_html(
                    ' · <a href="{}?{}" aria-label="Add a check for {} in {}">add</a>',
                    new,
                    query,
                    service.name if service else "the environment",
                    env,
                )
            return format_html(
                '<td class="cell cell-none" data-environment="{}"{}>'
                '<span class="muted">no check</span>{}</td>',
                env,
                service_attr,
                add,
            )
        status = cell.status
        if len(cell.checks) == 1:
            badge = format_html(
                '<a href="{}" class="badge state-{}">{}</a>',
                detail.format(cell.checks[0].pk),
                status,
                status,
            )
        else:
            badge = format_html(
                '<a href="{}?{}" class="badge state-{}">{} · {}</a>',
                listing,
                urlencode({"environment": env}),
                status,
                status,
                len(cell.checks),
            )
        latency = cell.last_latency
        latency_html = (
            format_html('<span class="latency">{} ms</span>', round(latency))
            if latency is not None
            else ""
        )
        failing = format_html_join(
            "",
            '<div class="failing-name"><a href="{}">{}</a>: {}</div>',
            (
                (detail.format(c.pk), c.name, Truncator(c.last_summary).chars(60))
                for c in cell.failing[:2]
            ),
        )
        uptime = cell.uptime
        return format_html(
            '<td class="cell cell-{}" data-environment="{}"{}><div class="cell-head">{} {}</div>'
            '<div class="uptime" title="Uptime over 24 hours, 7 days, 30 days">'
            "<span>{}</span> <span>{}</span> <span>{}</span></div>{}{}</td>",
            status,
            env,
            service_attr,
            badge,
            latency_html,
            uptime["day"],
            uptime["week"],
            uptime["month"],
            sparkline_svg(cell.latencies),
            failing,
        )

    return render


@login_required
@require_GET
def health_index(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug)
    request.project = project
    environments = list(project.environments.all())
    page = Paginator(project.services.order_by("tier", "name"), GRID_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    rows = selectors.health_grid(
        project, environments, list(page.object_list), include_environment_wide=page.number == 1
    )
    render_cell = _cell_renderer(project, membership.has_role(Membership.Role.ENGINEER))
    for row in rows:
        for cell in row.cells:
            cell.html = render_cell(row.service, cell)
    suites = list(
        Check.objects.filter(project=project, kind=Check.Kind.SUITE)
        .select_related("environment", "service")
        .order_by("environment__order", "name")[:100]
    )
    targets = list(
        PerformanceTarget.objects.filter(environment__project=project).select_related("environment")
    )
    context = {
        "project": project,
        "membership": membership,
        "environments": environments,
        "rows": rows,
        "page": page,
        "suites": suites,
        "expiring_certificates": probes.expiring_certificates(
            Check.objects.filter(project=project)
        )[:50],
        "targets": targets,
        "can_edit": membership.has_role(Membership.Role.ENGINEER),
        "has_checks": any(cell.checks for row in rows for cell in row.cells) or bool(suites),
    }
    if request.htmx:
        return render(request, "monitoring/_health_live.html", context)
    context["last_event_id"] = events.stream_cursor(project.topic)
    return render(request, "monitoring/health_index.html", context)


@login_required
@require_GET
def check_list(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug)
    request.project = project
    checks = Check.objects.filter(project=project, parent__isnull=True).select_related(
        "environment", "service"
    )
    environment = request.GET.get("environment") or ""
    status = request.GET.get("status") or ""
    if environment:
        checks = checks.filter(environment__name=environment)
    if status in Check.Status.values:
        checks = checks.filter(status=status)
    page = Paginator(checks.order_by("environment__order", "name"), LIST_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "monitoring/check_list.html",
        {
            "project": project,
            "page": page,
            "environments": project.environments.all(),
            "environment": environment,
            "status": status,
            "statuses": Check.Status.choices,
            "query": query.urlencode(),
            "can_edit": membership.has_role(Membership.Role.ENGINEER),
        },
    )


# --- A check's page -------------------------------------------------------------------------


def _check_context(request, check: Check, membership: Membership) -> dict:  # noqa: ANN001
    now = timezone.now()
    since = now - timedelta(hours=selectors.CHART_HOURS)
    failures = Paginator(selectors.failures(check), FAILURES_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    latest = selectors.results(check).first()
    steps = (
        list(check.steps.select_related("service", "environment").order_by("position", "pk"))
        if check.is_suite
        else []
    )
    for step in steps:
        step.assertion_lines = [forms.assertion_text(a) for a in step.assertions]
    return {
        "project": check.project,
        "check": check,
        "membership": membership,
        "can_edit": membership.has_role(Membership.Role.ENGINEER),
        "latest": latest,
        "uptime": selectors.check_uptime(check, now),
        "chart": response_chart_svg(selectors.chart_points(check, now), since, now),
        "failures": failures,
        "page": failures,
        "steps": steps,
        "retention_days": result_retention_days(),
        "assertion_lines": [forms.assertion_text(a) for a in check.assertions],
    }


@login_required
@require_GET
def check_detail(request, slug: str, check_id: int):  # noqa: ANN001, ANN201
    check, membership = _check_for(request, slug, check_id)
    if check.is_step:
        return redirect("check-detail", slug=slug, check_id=check.parent_id)
    context = _check_context(request, check, membership)
    if request.htmx:
        return render(request, "monitoring/_check_live.html", context)
    context["last_event_id"] = events.stream_cursor(check.topic)
    if check.probe == Check.Probe.HTTP:
        context["proxy"] = probes.environment_proxy(check.environment)
    elif check.probe == Check.Probe.HEARTBEAT and check.ping_key:
        context["ping_url"] = request.build_absolute_uri(heartbeats.ping_path(check))
    return render(request, "monitoring/check_detail.html", context)


@login_required
@require_POST
def check_run(request, slug: str, check_id: int):  # noqa: ANN001, ANN201
    check, membership = _check_for(request, slug, check_id, Membership.Role.ENGINEER)
    try:
        services.request_run(request.user, membership, check)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    if request.htmx:
        # The result arrives as a live event; the button only needs to know it was accepted.
        return HttpResponse(status=202)
    messages.success(request, "Run requested: the result will appear here when it is in.")
    return redirect("check-detail", slug=slug, check_id=check.pk)


# --- Creating and editing -------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def check_new(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug, Membership.Role.ENGINEER)
    request.project = project
    initial = {k: request.GET[k] for k in ("environment", "service") if request.GET.get(k)}
    form = forms.CheckForm(request.POST or None, project=project, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            check = services.create_check(request.user, membership, **form.service_arguments())
        except (ValidationError, Conflict, PermissionDenied) as exc:
            _errors(form, exc)
        else:
            messages.success(request, f"Check {check.name} created.")
            return redirect("check-detail", slug=slug, check_id=check.pk)
    return render(
        request,
        "monitoring/check_form.html",
        {"project": project, "form": form, "title": "New health check"},
    )


@login_required
@require_http_methods(["GET", "POST"])
def step_new(request, slug: str, check_id: int):  # noqa: ANN001, ANN201
    suite, membership = _check_for(request, slug, check_id, Membership.Role.ENGINEER)
    if not suite.is_suite:
        raise Http404
    form = forms.CheckForm(request.POST or None, project=suite.project, step=True)
    if request.method == "POST" and form.is_valid():
        try:
            step = services.create_check(
                request.user, membership, suite=suite, **form.service_arguments()
            )
        except (ValidationError, Conflict, PermissionDenied) as exc:
            _errors(form, exc)
        else:
            messages.success(request, f"Step {step.name} added.")
            return redirect("check-detail", slug=slug, check_id=suite.pk)
    return render(
        request,
        "monitoring/check_form.html",
        {
            "project": suite.project,
            "form": form,
            "suite": suite,
            "title": f"New step of {suite.name}",
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def suite_new(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug, Membership.Role.ENGINEER)
    request.project = project
    form = forms.SuiteForm(request.POST or None, project=project)
    if request.method == "POST" and form.is_valid():
        try:
            suite = services.create_suite(request.user, membership, **form.cleaned_data)
        except (ValidationError, Conflict, PermissionDenied) as exc:
            _errors(form, exc)
        else:
            messages.success(request, f"Suite {suite.name} created; add its steps.")
            return redirect("step-new", slug=slug, check_id=suite.pk)
    return render(
        request,
        "monitoring/check_form.html",
        {"project": project, "form": form, "title": "New smoke suite"},
    )


@login_required
@require_http_methods(["GET", "POST"])
def check_edit(request, slug: str, check_id: int):  # noqa: ANN001, ANN201
    check, membership = _check_for(request, slug, check_id, Membership.Role.ENGINEER)
    if check.is_suite:
        initial = {
            "name": check.name,
            "environment": check.environment.name,
            "service": check.service.name if check.service_id else None,
            "interval_seconds": check.interval_seconds,
            "enabled": check.enabled,
        }
        form = forms.SuiteForm(request.POST or None, project=check.project, initial=initial)
        form.fields["environment"].disabled = True
    else:
        form = forms.CheckForm(
            request.POST or None,
            project=check.project,
            step=check.is_step,
            initial=forms.CheckForm.initial_for(check),
        )
        if not check.is_step:
            # Moving a check between environments would mix two histories; make a new one.
            form.fields["environment"].disabled = True
    back = check.parent_id or check.pk
    if request.method == "POST" and form.is_valid():
        data = (
            form.service_arguments()
            if isinstance(form, forms.CheckForm)
            else dict(form.cleaned_data)
        )
        data.pop("environment", None)
        try:
            services.update_check(request.user, membership, check, **data)
        except (ValidationError, Conflict, PermissionDenied) as exc:
            _errors(form, exc)
        else:
            messages.success(request, f"{check.name} saved.")
            return redirect("check-detail", slug=slug, check_id=back)
    return render(
        request,
        "monitoring/check_form.html",
        {
            "project": check.project,
            "form": form,
            "check": check,
            "back": back,
            "title": f"Edit {check.name}",
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def check_delete(request, slug: str, check_id: int):  # noqa: ANN001, ANN201
    check, membership = _check_for(request, slug, check_id, Membership.Role.ENGINEER)
    if request.method == "POST":
        try:
            services.delete_check(request.user, membership, check)
        except (ValidationError, PermissionDenied) as exc:
            messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
            return redirect("check-detail", slug=slug, check_id=check.parent_id or check.pk)
        messages.success(request, f"{check.name} deleted.")
        if check.parent_id:
            return redirect("check-detail", slug=slug, check_id=check.parent_id)
        return redirect("health-index", slug=slug)
    return render(
        request,
        "monitoring/check_confirm_delete.html",
        {
            "project": check.project,
            "check": check,
            "result_count": check.results.count(),
        },
    )


# --- An environment's monitoring settings ---------------------------------------------------


def _environment_for(request, slug: str, name: str):  # noqa: ANN001, ANN202
    project, membership = project_for(request.user, slug)
    request.project = project
    environment = Environment.objects.filter(project=project, name=name).first()
    if environment is None:
        raise Http404
    return project, membership, environment


@login_required
@require_http_methods(["GET", "POST"])
def environment_monitoring(request, slug: str, name: str):  # noqa: ANN001, ANN201
    project, membership, environment = _environment_for(request, slug, name)
    is_admin = membership.has_role(Membership.Role.ADMIN)
    can_edit = membership.has_role(Membership.Role.LEAD)
    row = services.monitoring_for(environment)
    settings_form = forms.EnvironmentMonitoringForm(
        initial={
            "allow_list": row.allow_list,
            "allow_public": row.allow_public,
            "contact_emails": row.contact_emails,
            "client_certificate": row.client_certificate,
        },
        prefix="env",
    )
    target_form = forms.TargetForm(prefix="target")
    if request.method == "POST":
        if not can_edit:
            raise PermissionDenied("This needs the lead role in the project.")
        action = request.POST.get("action")
        if action == "settings":
            settings_form = forms.EnvironmentMonitoringForm(request.POST, prefix="env")
            if not is_admin:
                for admin_only in ("allow_list", "allow_public", "proxy_url", "clear_proxy"):
                    settings_form.fields[admin_only].disabled = True
            if settings_form.is_valid():
                try:
                    services.update_environment_monitoring(
                        request.user,
                        membership,
                        environment,
                        **settings_form.service_arguments(is_admin),
                    )
                except (ValidationError, PermissionDenied) as exc:
                    _errors(settings_form, exc)
                else:
                    messages.success(request, "Monitoring settings saved.")
                    return redirect("environment-monitoring", slug=slug, name=name)
        elif action == "target":
            target_form = forms.TargetForm(request.POST, prefix="target")
            if target_form.is_valid():
                try:
                    services.set_target(
                        request.user, membership, environment, **target_form.cleaned_data
                    )
                except (ValidationError, PermissionDenied) as exc:
                    _errors(target_form, exc)
                else:
                    messages.success(request, "Target saved.")
                    return redirect("environment-monitoring", slug=slug, name=name)
        else:
            raise Http404("Unknown action.")
    if not is_admin:
        settings_form.fields["allow_list"].disabled = True
        settings_form.fields["allow_public"].disabled = True
    return render(
        request,
        "monitoring/environment_monitoring.html",
        {
            "project": project,
            "environment": environment,
            "monitoring": row,
            "settings_form": settings_form,
            "target_form": target_form,
            "targets": environment.performance_targets.all(),
            "can_edit": can_edit,
            "is_admin": is_admin,
            "notifications": environment.monitoring_notifications.select_related("health_check")[
                :10
            ],
        },
    )


@login_required
@require_POST
def target_delete(request, slug: str, name: str, target_id: int):  # noqa: ANN001, ANN201
    project, membership, environment = _environment_for(request, slug, name)
    target = environment.performance_targets.filter(pk=target_id).first()
    if target is None:
        raise Http404
    try:
        services.delete_target(request.user, membership, target)
    except (ValidationError, PermissionDenied) as exc:
        messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
    else:
        messages.success(request, "Target removed.")
    return redirect("environment-monitoring", slug=slug, name=name)
