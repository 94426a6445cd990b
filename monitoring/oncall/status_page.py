"""The public status page: what customers see of a project, and nothing more.

Off by default; a project admin switches it on and names public *groups* of services ("Checkout",
"Search"). The page shows, per group, the state of the group's enabled health checks in the
page's environment now (operational: none failing; degraded: some; outage: all), a bar per day
for the last 90 days, and the incidents marked public with their public updates only.

What it never shows: service and check names, URLs, people (unless a public update's text names
them), private incidents. ``render`` builds the page from a closed set of fields, and the tests
read the HTML for anything internal.

Speed: the day bars come from ``StatusDay`` rows, recomputed on beat from the daily check rollups
(``refresh_recent``: today and yesterday; ``refresh(page)``: all 90 days, when the page or its
groups change), and each group's bars before today are kept as HTML on the group
(``rebuild_history``), so a request reads a few short rows and formats one bar per group. The
rendered body is cached for
``CACHE_SECONDS`` and answered with an ETag, so the refreshes of a crowd during an outage cost
one render per period.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import OuterRef, Q, Subquery, Sum
from django.template.loader import render_to_string
from django.utils import timezone

from releasecenter import events
from releasecenter.access import require_role
from releasecenter.models import Membership, Project

from ..incidents.models import Incident, TimelineEntry
from ..models import Check, CheckRollup
from .models import PublicIncident, PublicUpdate, StatusDay, StatusGroup, StatusPage

DAYS = 90
CACHE_SECONDS = 10
# A day with at least this share of failed runs is an outage; fewer failures are "degraded".
OUTAGE_SHARE = 0.25
LABELS = {
    StatusDay.State.OPERATIONAL: "Operational",
    StatusDay.State.DEGRADED: "Degraded performance",
    StatusDay.State.OUTAGE: "Outage",
    StatusDay.State.NO_DATA: "No data",
}


def cache_key(slug: str) -> str:
    return f"status-page:{slug}"


def invalidate(slug: str) -> None:
    cache.delete(cache_key(slug))


# --- Configuration -----------------------------------------------------------------------------


@transaction.atomic
def configure(
    actor: Any,
    membership: Membership,
    *,
    enabled: bool,
    title: str = "",
    environment: str | None = None,
    groups: Iterable[dict[str, Any]] = (),
) -> StatusPage:
    """Switch the page on or off and set its groups: [{"name": "Checkout", "services": [...]}]."""
    require_role(membership, Membership.Role.ADMIN)
    project = membership.project
    env = None
    if environment:
        env = project.environments.filter(name=environment).first()
        if env is None:
            raise ValidationError({"environment": f"No environment '{environment}' here."})
    else:
        env = project.environments.order_by("-order").first()
    services = {s.name: s for s in project.services.all()}
    cleaned = []
    for i, group in enumerate(groups):
        name = str(group.get("name", "")).strip()
        if not name or len(name) > 80:
            raise ValidationError({"groups": f"Group {i + 1} needs a name of 1 to 80 characters."})
        unknown = [s for s in group.get("services", []) if s not in services]
        if unknown:
            raise ValidationError({"groups": f"No such service here: {', '.join(unknown)}."})
        cleaned.append((name, [services[s] for s in group.get("services", [])]))
    page, _ = StatusPage.objects.select_for_update().get_or_create(project=project)
    page.enabled = bool(enabled)
    page.title = (title or "").strip()[:120]
    page.environment = env
    page.updated_at = timezone.now()
    page.save()
    if groups:
        page.groups.all().delete()
        for position, (name, members) in enumerate(cleaned):
            group = StatusGroup.objects.create(page=page, name=name, position=position)
            group.services.set(members)
    events.publish(
        project.topic,
        "oncall.status_page_configured",
        project=project,
        actor=actor,
        obj=page,
        after={"enabled": page.enabled, "groups": [name for name, _ in cleaned]},
        data={"text": f"Public status page {'switched on' if page.enabled else 'switched off'}"},
    )
    transaction.on_commit(lambda: (refresh(page), invalidate(project.slug)))
    return page


# --- Daily states ------------------------------------------------------------------------------


def day_state(runs: int, failures: int) -> str:
    if not runs:
        return StatusDay.State.NO_DATA
    if not failures:
        return StatusDay.State.OPERATIONAL
    return StatusDay.State.OUTAGE if failures / runs >= OUTAGE_SHARE else StatusDay.State.DEGRADED


def _today() -> date:
    return timezone.now().astimezone(UTC).date()


def refresh(page: StatusPage, days: int = DAYS) -> int:
    """Recompute the last ``days`` days of the page's groups from the daily rollups."""
    if page.environment_id is None:
        return 0
    groups_of: dict[int, list[int]] = defaultdict(list)
    for group_id, service_id in StatusGroup.services.through.objects.filter(
        statusgroup__page=page
    ).values_list("statusgroup_id", "service_id"):
        groups_of[service_id].append(group_id)
    first = _today() - timedelta(days=days - 1)
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    totals: dict[tuple[int, date], list[int]] = defaultdict(lambda: [0, 0])
    for service_id, bucket, runs, failures in (
        CheckRollup.objects.filter(
            span=CheckRollup.Span.DAY,
            start__gte=start,
            health_check__environment_id=page.environment_id,
            health_check__parent__isnull=True,
            health_check__service_id__in=list(groups_of),
        )
        .values_list("health_check__service_id", "start")
        .annotate(runs=Sum("runs"), failures=Sum("failures"))
        .order_by()
    ):
        for group_id in groups_of[service_id]:
            total = totals[(group_id, bucket.astimezone(UTC).date())]
            total[0] += runs
            total[1] += failures
    rows = [
        StatusDay(group_id=g, day=d, runs=r, failures=f, state=day_state(r, f))
        for (g, d), (r, f) in totals.items()
    ]
    StatusDay.objects.bulk_create(
        rows,
        batch_size=1000,
        update_conflicts=True,
        unique_fields=["group", "day"],
        update_fields=["runs", "failures", "state"],
    )
    StatusDay.objects.filter(group__page=page, day__lt=first).delete()
    rebuild_history(page)
    return len(rows)


def refresh_recent() -> int:
    written = 0
    for page in StatusPage.objects.filter(enabled=True).select_related("project"):
        written += refresh(page, days=2)
    return written


# --- Reading -----------------------------------------------------------------------------------


def enabled_page(slug: str) -> StatusPage | None:
    return (
        StatusPage.objects.select_related("project")
        .filter(project__slug=slug, enabled=True)
        .first()
    )


def _current_states(page: StatusPage, groups: list[StatusGroup]) -> dict[int, str]:
    through = StatusGroup.services.through.objects.filter(statusgroup__page=page)
    members: dict[int, list[int]] = defaultdict(list)
    for group_id, service_id in through.values_list("statusgroup_id", "service_id"):
        members[group_id].append(service_id)
    by_service: dict[int, list[str]] = defaultdict(list)
    if page.environment_id is not None:
        for service_id, status in Check.objects.filter(
            environment_id=page.environment_id,
            parent__isnull=True,
            enabled=True,
            service_id__in=through.values("service_id"),
        ).values_list("service_id", "status"):
            by_service[service_id].append(status)
    states = {}
    for group in groups:
        statuses = [s for sid in members[group.pk] for s in by_service[sid]]
        known = [s for s in statuses if s != Check.Status.UNKNOWN]
        failing = sum(1 for s in known if s == Check.Status.FAILING)
        if not known:
            states[group.pk] = StatusDay.State.NO_DATA
        elif not failing:
            states[group.pk] = StatusDay.State.OPERATIONAL
        else:
            states[group.pk] = (
                StatusDay.State.OUTAGE if failing == len(known) else StatusDay.State.DEGRADED
            )
    return states


def _bar(day: date, state: str) -> str:
    return f'<span class="day {state}" title="{day:%d %b %Y}: {LABELS[state]}"></span>'


ORDER = ["none", "operational", "degraded", "outage"]


def _worst(*states: str) -> str:
    return max(states, key=ORDER.index)


def rebuild_history(page: StatusPage, today: date | None = None) -> list[StatusGroup]:
    """Store each group's bars of the 89 days before today as HTML (one query for the days,
    one update). A request then reads 30 short rows instead of 2,700 and formats none."""
    today = today or _today()
    first = today - timedelta(days=DAYS - 1)
    by_group: dict[int, dict[date, str]] = defaultdict(dict)
    for group_id, day, state in StatusDay.objects.filter(
        group__page=page, day__gte=first, day__lt=today
    ).values_list("group_id", "day", "state"):
        by_group[group_id][day] = state
    groups = list(page.groups.all())
    for group in groups:
        days = by_group[group.pk]
        group.history_html = "".join(
            _bar(day, days.get(day, StatusDay.State.NO_DATA))
            for day in (first + timedelta(days=i) for i in range(DAYS - 1))
        )
        group.history_through = today - timedelta(days=1)
    StatusGroup.objects.bulk_update(groups, ["history_html", "history_through"])
    return groups


def page_context(page: StatusPage) -> dict[str, Any]:
    today = _today()
    groups = list(
        page.groups.annotate(
            today_state=Subquery(
                StatusDay.objects.filter(group=OuterRef("pk"), day=today).values("state")[:1]
            )
        )
    )
    if any(g.history_through != today - timedelta(days=1) for g in groups):
        # The first request after midnight (UTC), before the beat refreshed the days.
        rebuild_history(page, today)
        return page_context(page)
    states = _current_states(page, groups)
    rows = []
    for group in groups:
        now_state = states[group.pk]
        today_state = _worst(now_state, group.today_state or StatusDay.State.NO_DATA)
        rows.append(
            {
                "name": group.name,
                "state": now_state,
                "label": LABELS[now_state],
                # Stored HTML of our own making from a closed set of states and dates.
                "bars": group.history_html + _bar(today, today_state),
            }
        )
    worst = _worst(StatusDay.State.NO_DATA, *(r["state"] for r in rows))
    since = timezone.now() - timedelta(days=DAYS)
    incidents = public_incidents(page.project, since)
    return {
        "title": page.title or page.project.name,
        "groups": rows,
        "overall": worst,
        "overall_label": {
            "operational": "All systems operational",
            "degraded": "Some systems degraded",
            "outage": "Major outage",
            "none": "No data yet",
        }[worst],
        "incidents": incidents,
        "generated_at": timezone.now(),
    }


def render(slug: str) -> tuple[bytes, str] | None:
    """The page's body and ETag, or None when the project has no enabled page."""
    key = cache_key(slug)
    cached = cache.get(key)
    if cached is not None:
        return cached
    page = enabled_page(slug)
    if page is None:
        return None
    body = render_to_string("monitoring/status_page.html", page_context(page)).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    cache.set(key, (body, etag), CACHE_SECONDS)
    return body, etag


# --- Public incidents ----------------------------------------------------------------------------


def public_incidents(project: Project, since: datetime) -> list[dict[str, Any]]:
    """Incidents marked public (open ones, and those of the window), each with its public title,
    status, times and the updates their authors marked public. Nothing else of the incident."""
    rows = list(
        PublicIncident.objects.filter(incident__project=project)
        .filter(Q(incident__started_at__gte=since) | Q(incident__status__in=Incident.OPEN_STATUSES))
        .select_related("incident")
        .order_by("-incident__started_at")[:50]
    )
    updates: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for incident_id, at, text in (
        PublicUpdate.objects.filter(entry__incident__in=[r.incident_id for r in rows])
        .order_by("-entry__occurred_at")
        .values_list("entry__incident_id", "entry__occurred_at", "entry__text")
    ):
        updates[incident_id].append({"at": at, "text": text})
    return [
        {
            "title": row.title,
            "status": row.incident.get_status_display(),
            "started_at": row.incident.started_at,
            "resolved_at": row.incident.resolved_at,
            "updates": updates[row.incident_id],
        }
        for row in rows
    ]


@transaction.atomic
def publish_incident(
    actor: Any, membership: Membership, incident: Incident, *, title: str
) -> PublicIncident:
    """Show an incident on the status page under a public title (leads decide what customers
    read)."""
    require_role(membership, Membership.Role.LEAD)
    title = (title or "").strip() if isinstance(title, str) else ""
    if not title or len(title) > 200 or "\x00" in title:
        raise ValidationError({"title": "A public title of 1 to 200 characters."})
    row, _ = PublicIncident.objects.update_or_create(
        incident=incident, defaults={"title": title, "marked_by": actor}
    )
    events.publish(
        incident.project.topic,
        "oncall.incident_published",
        project=incident.project_id,
        actor=actor,
        obj=incident,
        after={"public_title": title},
        data={"text": f"{incident.reference} shown on the status page as “{title}”"},
    )
    slug = incident.project.slug
    transaction.on_commit(lambda: invalidate(slug))
    return row


@transaction.atomic
def mark_update_public(actor: Any, membership: Membership, entry: TimelineEntry) -> PublicUpdate:
    """An update is private unless its author marks it public."""
    require_role(membership, Membership.Role.ENGINEER)
    if entry.source != TimelineEntry.Source.PERSON or entry.author_id != actor.pk:
        raise PermissionDenied("Only its author can make an entry public.")
    row, _ = PublicUpdate.objects.get_or_create(entry=entry)
    incident = entry.incident
    events.publish(
        incident.project.topic,
        "oncall.update_published",
        project=incident.project_id,
        actor=actor,
        obj=entry,
        after={"incident": incident.reference},
        data={"text": f"An update of {incident.reference} made public on the status page"},
    )
    slug = incident.project.slug
    transaction.on_commit(lambda: invalidate(slug))
    return row
