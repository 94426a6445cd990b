"""On-call pages: schedules and who is on call, a schedule's four-week calendar, the channels with
their deliveries, and the public status page. Thin: the services write, these read and render."""

from __future__ import annotations

import calendar as calendar_module
from collections import defaultdict
from datetime import datetime, timedelta

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, HttpResponseNotModified
from django.shortcuts import render
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_GET, require_http_methods

from releasecenter.access import membership_for, project_for

from ..lib import rotation as rot
from . import escalation
from . import schedules as schedule_services
from . import status_page as pages
from .models import ChannelMessage, DeliveryAttempt, NotificationChannel, Schedule

RECENT_MESSAGES = 30


@login_required
@require_GET
def oncall_index(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug)
    request.project = project
    now = timezone.now()
    channels = list(NotificationChannel.objects.filter(project=project))
    messages = list(
        ChannelMessage.objects.filter(project=project)
        .select_related("channel")
        .order_by("-created_at", "-id")[:RECENT_MESSAGES]
    )
    tries: dict[int, list[DeliveryAttempt]] = defaultdict(list)
    for attempt in DeliveryAttempt.objects.filter(message__in=messages).order_by("number"):
        tries[attempt.message_id].append(attempt)
    return render(
        request,
        "monitoring/oncall/index.html",
        {
            "project": project,
            "membership": membership,
            "on_call": schedule_services.project_on_call(project, now),
            "channels": channels,
            "deliveries": [(m, tries[m.pk]) for m in messages],
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
