"""Escalation: page the right people for an incident until someone acknowledges it.

A project's policy has, per severity, ordered levels ("page the on-call of schedule Primary,
then wait 5 minutes"; "page liam and mia"). An open, unacknowledged incident gets level 1 at
once; level n+1 once level n's wait has passed *and* the severity's acknowledge SLA (the
incident's ``acknowledge_due_at``) has run out. Acknowledging stops it: the tick only looks at
unacknowledged incidents, and re-checks under the incident's row lock before paging.

Idempotent in the database: a page is an ``EscalationPage`` row unique per (incident, level),
inserted with ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` in the same transaction as its
timeline entry and messages (a tick pages up to ``CHUNK`` incidents per transaction, their rows
locked in id order, their entries, events and messages each written in one statement). Only the transaction whose insert returned the row pages; two beats,
a redelivered task or two workers racing for the same level find the row taken and do nothing.
The state lives in those rows, not in a worker, so a restarted worker continues where the last
one stopped.

Each page carries a one-tap acknowledge link (``ack_link``): signed with ``django.core.signing``,
valid for ``LINK_MAX_AGE`` and only while the incident is open, used once (``link_used_at``),
and only for members of the incident's project; it asks for a login first.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from releasecenter import events
from releasecenter.access import require_role
from releasecenter.models import Membership, Project

from ..incidents import services as incidents
from ..incidents.models import SEVERITIES, Incident, TimelineEntry
from . import channels, schedules
from .channels import enabled_channels
from .models import EscalationLevel, EscalationPage, Schedule

MAX_LEVELS = 10
MAX_WAIT_MINUTES = 24 * 60
LINK_MAX_AGE = timedelta(hours=24)
LINK_SALT = "monitoring.oncall.acknowledge"


# --- The policy ----------------------------------------------------------------------------------


def policy(project: Project) -> dict[str, list[dict[str, Any]]]:
    levels = (
        EscalationLevel.objects.filter(project=project)
        .select_related("schedule")
        .prefetch_related("members")
        .order_by("severity", "position")
    )
    result: dict[str, list[dict[str, Any]]] = {s: [] for s in SEVERITIES}
    for level in levels:
        result[level.severity].append(
            {
                "schedule": level.schedule.name if level.schedule_id else None,
                "members": sorted(u.username for u in level.members.all()),
                "wait_minutes": level.wait_minutes,
            }
        )
    return result


def _clean_levels(project: Project, severity: str, levels: Any) -> list[dict[str, Any]]:
    field = f"policy.{severity}"
    if not isinstance(levels, list):
        raise ValidationError({field: "A list of levels."})
    if len(levels) > MAX_LEVELS:
        raise ValidationError({field: f"At most {MAX_LEVELS} levels."})
    schedules_by_name = {s.name: s for s in Schedule.objects.filter(project=project)}
    members = {u.username: u for u in get_user_model().objects.filter(memberships__project=project)}
    cleaned = []
    for i, level in enumerate(levels, start=1):
        where = f"{field}[{i}]"
        if not isinstance(level, dict):
            raise ValidationError({where: "An object with schedule, members and wait_minutes."})
        schedule_name = level.get("schedule")
        usernames = level.get("members") or []
        wait = level.get("wait_minutes", 5)
        schedule = None
        if schedule_name not in (None, ""):
            schedule = schedules_by_name.get(schedule_name)
            if schedule is None:
                raise ValidationError({where: f"No schedule named {schedule_name!r} here."})
        if not isinstance(usernames, list) or not all(isinstance(u, str) for u in usernames):
            raise ValidationError({where: "members is a list of usernames."})
        unknown = [u for u in usernames if u not in members]
        if unknown:
            raise ValidationError({where: f"Not a member of this project: {', '.join(unknown)}."})
        if schedule is None and not usernames:
            raise ValidationError({where: "Name a schedule or members to page."})
        if isinstance(wait, bool) or not isinstance(wait, int) or not 0 <= wait <= MAX_WAIT_MINUTES:
            raise ValidationError({where: f"wait_minutes is 0 to {MAX_WAIT_MINUTES}."})
        cleaned.append(
            {"schedule": schedule, "members": [members[u] for u in usernames], "wait": wait}
        )
    return cleaned


@transaction.atomic
def set_policy(
    actor: Any, membership: Membership, new_policy: dict[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    """Replace the project's escalation policy: {"P1": [levels], ...}; a severity left out has
    no escalation. Incidents already paged keep their pages; later levels follow the new one."""
    require_role(membership, Membership.Role.LEAD)
    project = membership.project
    if not isinstance(new_policy, dict):
        raise ValidationError({"policy": "An object of severities to lists of levels."})
    unknown = [s for s in new_policy if s not in SEVERITIES]
    if unknown:
        raise ValidationError({"policy": f"Unknown severity: {', '.join(map(str, unknown))}."})
    cleaned = {s: _clean_levels(project, s, levels) for s, levels in new_policy.items()}
    before = policy(project)
    EscalationLevel.objects.filter(project=project).delete()
    for severity, levels in cleaned.items():
        for position, level in enumerate(levels, start=1):
            row = EscalationLevel.objects.create(
                project=project,
                severity=severity,
                position=position,
                schedule=level["schedule"],
                wait_minutes=level["wait"],
            )
            row.members.set(level["members"])
    after = policy(project)
    events.publish(
        project.topic,
        "oncall.escalation_policy_changed",
        project=project,
        actor=actor,
        before=before,
        after=after,
        data={
            "text": "Escalation policy changed: "
            + (
                ", ".join(f"{s} {len(levels)} level(s)" for s, levels in after.items() if levels)
                or "no escalation"
            )
        },
    )
    return after


# --- The tick ------------------------------------------------------------------------------------


def _claim(wanted: list[tuple[int, int, list[str]]], now: datetime) -> dict[tuple[int, int], int]:
    """Insert the page rows that do not exist yet, in one statement; {(incident, level): id}
    of those this transaction inserted. Rows another transaction holds make this one wait for
    it and then skip them, so each page has exactly one owner."""
    if not wanted:
        return {}
    table = EscalationPage._meta.db_table
    values = ", ".join(["(%s, %s, %s, %s)"] * len(wanted))
    params: list[Any] = []
    for incident_id, level, recipients in wanted:
        params += [incident_id, level, now, json.dumps(recipients)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (incident_id, level, paged_at, recipients) "  # noqa: S608
            f"VALUES {values} ON CONFLICT (incident_id, level) DO NOTHING "
            "RETURNING id, incident_id, level",
            params,
        )
        return {(incident_id, level): pk for pk, incident_id, level in cursor.fetchall()}


def due_pages(now: datetime, incident_ids: Iterable[int] | None = None) -> list[tuple]:
    """(incident, level row) for every page that is due now. Three queries, whatever the
    number of incidents."""
    open_unacked = Incident.objects.filter(
        status__in=Incident.OPEN_STATUSES, acknowledged_at__isnull=True
    )
    if incident_ids is not None:
        open_unacked = open_unacked.filter(pk__in=list(incident_ids))
    rows = list(open_unacked.values_list("pk", "project_id", "severity", "acknowledge_due_at"))
    if not rows:
        return []
    levels: dict[tuple[int, str], list[EscalationLevel]] = defaultdict(list)
    for level in (
        EscalationLevel.objects.filter(project_id__in={r[1] for r in rows})
        .select_related("schedule")
        .prefetch_related("members")
        .order_by("position")
    ):
        levels[(level.project_id, level.severity)].append(level)
    last: dict[int, tuple[int, datetime]] = {}
    pages = EscalationPage.objects.filter(
        incident__status__in=Incident.OPEN_STATUSES, incident__acknowledged_at__isnull=True
    )
    if incident_ids is not None:
        pages = pages.filter(incident_id__in=[r[0] for r in rows])
    for incident_id, level, paged_at in pages.values_list("incident_id", "level", "paged_at"):
        if incident_id not in last or level > last[incident_id][0]:
            last[incident_id] = (level, paged_at)
    due = []
    for incident_id, project_id, severity, acknowledge_due_at in rows:
        chain = levels.get((project_id, severity))
        if not chain:
            continue
        previous = last.get(incident_id)
        if previous is None:
            due.append((incident_id, chain[0]))
            continue
        number, paged_at = previous
        if number >= len(chain):
            continue
        ready = paged_at + timedelta(minutes=chain[number - 1].wait_minutes)
        if acknowledge_due_at is not None:
            ready = max(ready, acknowledge_due_at)
        if now >= ready:
            due.append((incident_id, chain[number]))
    return due


CHUNK = 200


def tick(now: datetime | None = None, incident_ids: Iterable[int] | None = None) -> int:
    """Page every level that is due. Returns how many pages this call sent."""
    now = now or timezone.now()
    due = due_pages(now, incident_ids)
    if not due:
        return 0
    wanted = {level.schedule_id: level.schedule for _, level in due if level.schedule_id}
    on_call = {entry.schedule.pk: entry for entry in schedules.on_call(list(wanted.values()), now)}
    plans = []
    for incident_id, level in due:
        people = list(level.members.all())
        via = ""
        if level.schedule_id:
            entry = on_call[level.schedule_id]
            if entry.user is not None:
                people.insert(0, entry.user)
                via = f" (on call for {level.schedule.name})"
        plans.append((incident_id, level, list({p.pk: p for p in people}.values()), via))
    # Sorted by incident, so concurrent ticks lock rows in one order and never deadlock.
    plans.sort(key=lambda plan: plan[0])
    return sum(_page(plans[i : i + CHUNK], now) for i in range(0, len(plans), CHUNK))


@transaction.atomic
def _page(plans: list[tuple[int, EscalationLevel, list, str]], now: datetime) -> int:
    # The incidents' row locks order this against acknowledge_incident, which takes them too:
    # an incident acknowledged a moment ago is not paged.
    locked = {
        incident.pk: incident
        for incident in Incident.objects.select_for_update(of=("self",))
        .select_related("project")
        .filter(pk__in=[plan[0] for plan in plans])
        .order_by("pk")
    }
    plans = [
        plan
        for plan in plans
        if plan[0] in locked and locked[plan[0]].acknowledged_at is None and locked[plan[0]].is_open
    ]
    claimed = _claim(
        [
            (incident_id, level.position, [p.username for p in people])
            for incident_id, level, people, _via in plans
        ],
        now,
    )
    project_channels = enabled_channels({locked[plan[0]].project_id for plan in plans})
    messages: list = []
    entries: list[TimelineEntry] = []
    for incident_id, level, people, via in plans:
        page_id = claimed.get((incident_id, level.position))
        if page_id is None:
            continue
        incident = locked[incident_id]
        entry, rows = _announce(incident, level, people, via, page_id, project_channels, now)
        entries.append(entry)
        messages += rows
    _record(entries, now)
    channels.queue(messages)
    return len(claimed)


def _record(entries: list[TimelineEntry], now: datetime) -> None:
    """The pages' timeline entries and their audit events, in two statements whatever their
    number (as the incidents' SLA beat records breaches): one page per incident is the usual
    case, but an outage opens many incidents at once."""
    if not entries:
        return
    entries = TimelineEntry.objects.bulk_create(entries)
    events.publish_many(incidents.entry_events(entries, "incident.paged", now))


def _announce(
    incident: Incident,
    level: EscalationLevel,
    people: list,
    via: str,
    page_id: int,
    project_channels: dict[int, list],
    now: datetime,
) -> tuple[TimelineEntry, list]:
    """The page's timeline entry and its messages (both unsaved), with the acknowledge link."""
    names = [p.username for p in people]
    who = ", ".join(names) if names else "nobody (the schedule has no one on call)"
    escalated = level.position > 1
    text = (
        f"{incident.reference} {'escalated to' if escalated else 'paged'} level "
        f"{level.position} of the {incident.severity} escalation: {who}{via}"
    )
    entry = TimelineEntry(
        incident=incident,
        kind=TimelineEntry.Kind.SIGNAL,
        source=TimelineEntry.Source.SYSTEM,
        text=text,
        occurred_at=now,
        created_at=now,
        subject_type="escalation",
        subject_id=str(page_id),
        data={"escalation_level": level.position, "paged": names},
    )
    link = ack_link(page_id, incident.pk)
    subject = (
        f"[{incident.project.name}] {incident.severity} {incident.reference} needs "
        f"acknowledgement: {incident.title}"
    )
    body = (
        f"{incident.reference} {incident.title} ({incident.severity}, {incident.status}) is not "
        f"acknowledged.\n"
        f"Level {level.position}: {who}{via}.\n\n"
        f"Acknowledge: {link}\n"
        f"Incident: {settings.RELEASECENTER_URL}{incidents.incident_url(incident)}\n"
    )
    return entry, channels.messages_for(
        incident.project_id,
        event="incident.escalated" if escalated else "incident.paged",
        subject=subject,
        text=body,
        data={
            "incident": incident.reference,
            "incident_id": incident.pk,
            "title": incident.title,
            "severity": incident.severity,
            "level": level.position,
            "paged": names,
            "acknowledge_url": link,
        },
        incident_id=incident.pk,
        channels=project_channels.get(incident.project_id, []),
        emails=[p.email for p in people if p.email],
    )


# --- One-tap acknowledge -------------------------------------------------------------------------


def ack_link(page_id: int, incident_id: int) -> str:
    token = signing.dumps({"p": page_id, "i": incident_id}, salt=LINK_SALT, compress=True)
    return settings.RELEASECENTER_URL + reverse("oncall-ack", args=[token])


class LinkRefused(Exception):
    """The link cannot acknowledge anything: expired, used or the incident no longer open.
    (A tampered link is not a refusal: it does not exist, a 404.)"""


def page_for_token(token: str) -> EscalationPage | None:
    """The page a link names, or None when it was not made by us. Raises LinkRefused when it
    was, but has expired."""
    try:
        data = signing.loads(token, salt=LINK_SALT, max_age=LINK_MAX_AGE)
    except signing.SignatureExpired:
        raise LinkRefused("This acknowledge link has expired (links last 24 hours).") from None
    except signing.BadSignature:
        return None
    if not isinstance(data, dict):
        return None
    return (
        EscalationPage.objects.select_related("incident__project")
        .filter(pk=data.get("p"), incident_id=data.get("i"))
        .first()
    )


def link_state(page: EscalationPage) -> str | None:
    """Why a link of this page cannot be used now, or None when it can."""
    incident = page.incident
    if not incident.is_open:
        return f"{incident.reference} is {incident.status}; this link has expired."
    if page.link_used_at is not None:
        return "This acknowledge link was already used."
    return None


@transaction.atomic
def acknowledge_by_link(user: Any, membership: Membership, page: EscalationPage) -> Incident:
    """Use the link once: acknowledge the incident (or find it already acknowledged)."""
    require_role(membership, Membership.Role.ENGINEER)
    used = EscalationPage.objects.filter(pk=page.pk, link_used_at__isnull=True).update(
        link_used_at=timezone.now()
    )
    if not used:
        raise LinkRefused("This acknowledge link was already used.")
    incident = page.incident
    if not incident.is_open:
        raise LinkRefused(f"{incident.reference} is {incident.status}; this link has expired.")
    if incident.project_id != membership.project_id:
        raise PermissionDenied("Not your project.")
    return incidents.acknowledge_incident(user, membership, incident)
