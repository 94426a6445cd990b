"""Reads for incident pages and the API: clocks, suspects, lists."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from releasecenter import incident_hooks

from .models import Incident


@dataclass(frozen=True)
class Clock:
    name: str  # "acknowledge" or "update"
    label: str
    due_at: datetime | None
    breached: bool
    stopped: bool  # acknowledged, or the incident is no longer open
    seconds_left: int | None

    @property
    def state(self) -> str:
        if self.stopped:
            return "stopped"
        return "breached" if self.breached else "running"


def clocks(incident: Incident, now: datetime | None = None) -> list[Clock]:
    now = now or timezone.now()
    ack_stopped = incident.acknowledged_at is not None or not incident.is_open
    ack_breached = bool(incident.acknowledge_breached_at) or (
        not ack_stopped
        and incident.acknowledge_due_at is not None
        and incident.acknowledge_due_at <= now
    )
    update_stopped = not incident.is_open
    update_breached = not update_stopped and (
        bool(incident.update_breached_at)
        or (incident.update_due_at is not None and incident.update_due_at <= now)
    )

    def left(due: datetime | None, stopped: bool) -> int | None:
        if due is None or stopped:
            return None
        return int((due - now).total_seconds())

    return [
        Clock(
            "acknowledge",
            "Acknowledge",
            incident.acknowledge_due_at,
            ack_breached,
            ack_stopped,
            left(incident.acknowledge_due_at, ack_stopped),
        ),
        Clock(
            "update",
            "Next update",
            incident.update_due_at,
            update_breached,
            update_stopped,
            left(incident.update_due_at, update_stopped),
        ),
    ]


def sla(incident: Incident, now: datetime | None = None) -> dict:
    ack, update = clocks(incident, now)
    return {
        "acknowledge_by": incident.acknowledge_due_at,
        "next_update_by": incident.update_due_at if incident.is_open else None,
        "breached": ack.breached or update.breached,
        "acknowledge_breached": ack.breached,
        "update_breached": update.breached,
    }


def environment_ids(incident: Incident) -> list[int]:
    cached = getattr(incident, "_prefetched_objects_cache", {}).get("environments")
    if cached is not None:
        return [e.pk for e in cached]
    return list(incident.environments.values_list("pk", flat=True))


def suspects(incident: Incident) -> list[incident_hooks.Suspect]:
    return incident_hooks.suspects(
        incident.project_id, environment_ids(incident), incident.started_at, incident.started_at
    )


def overview_panels(project, environments: list) -> dict[int, dict]:  # noqa: ANN001
    """For the project overview: open incidents per environment and overdue postmortem action
    items (listed under the first environment of their incident). Three queries."""
    from django.db.models import Min

    from .models import ActionItem

    panels: dict[int, dict] = {}
    open_rows = Incident.objects.open().filter(project=project).order_by("severity", "-started_at")
    through = Incident.environments.through.objects.filter(incident__in=open_rows)
    by_incident: dict[int, list[int]] = {}
    for incident_id, env_id in through.values_list("incident_id", "environment_id"):
        by_incident.setdefault(incident_id, []).append(env_id)
    for incident in open_rows.filter(pk__in=list(by_incident))[:50]:
        for env_id in by_incident[incident.pk]:
            panels.setdefault(env_id, {}).setdefault("open_incidents", []).append(incident)
    today = timezone.localdate()
    overdue = (
        ActionItem.objects.filter(
            postmortem__incident__project=project, done_at__isnull=True, due_date__lt=today
        )
        .select_related("owner", "postmortem__incident")
        .annotate(env_id=Min("postmortem__incident__environments"))
        .order_by("due_date", "id")[:20]
    )
    for item in overdue:
        if item.env_id is not None:
            panels.setdefault(item.env_id, {}).setdefault("overdue_actions", []).append(item)
    return panels
