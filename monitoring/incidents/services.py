"""The verbs of incident response. Views, the API and tasks call these; nothing else writes.

Each verb validates, then changes the rows under a row lock, then writes a timeline entry and an
audit event (``events.publish`` on the incident's topic, which also wakes its live page).
Writers may pass the ``version`` they read; a stale one raises ``StaleVersion`` (a 409 carrying
the current state) instead of overwriting someone else's change.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.urls import reverse
from django.utils import timezone

from releasecenter import events
from releasecenter.access import require_role
from releasecenter.models import AuditEvent, Environment, Membership, Project, Service
from releasecenter.services import Conflict

from . import sla
from .models import (
    SEVERITIES,
    Incident,
    SeverityPolicy,
    TimelineEntry,
)

MAX_TITLE = 200
MAX_SUMMARY = 20_000
MAX_ENTRY = 10_000
MAX_REASON = 2_000


class StaleVersion(Conflict):
    """Someone changed the incident since the writer read it."""

    def __init__(self, incident: Incident) -> None:
        super().__init__(
            f"{incident.reference} changed since you loaded it (now version {incident.version}); "
            "reload and try again."
        )
        self.incident = incident


# --- Validation -------------------------------------------------------------------------------


def _text(value: Any, field: str, *, required: bool, limit: int, one_line: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValidationError({field: "Give text."})
    if "\x00" in value:
        raise ValidationError({field: "Text may not contain NUL bytes."})
    value = " ".join(value.split()) if one_line else value.strip()
    if required and not value:
        raise ValidationError({field: "This may not be empty."})
    if len(value) > limit:
        raise ValidationError({field: f"At most {limit} characters."})
    return value


def _severity(value: Any) -> str:
    if value not in SEVERITIES:
        raise ValidationError({"severity": f"Use one of {', '.join(SEVERITIES)}."})
    return value


def _moment(project: Project, value: Any, field: str, now: datetime) -> datetime:
    if isinstance(value, str):
        from django.utils.dateparse import parse_datetime

        parsed = parse_datetime(value)
        if parsed is None:
            raise ValidationError({field: "Give a date and time, e.g. 2026-05-01T09:30:00Z."})
        value = parsed
    if not isinstance(value, datetime):
        raise ValidationError({field: "Give a date and time."})
    if timezone.is_naive(value):
        raise ValidationError({field: "Give a time zone (e.g. Z or +02:00)."})
    # A minute of slack for clocks that disagree a little.
    if value > now + timedelta(minutes=1):
        raise ValidationError({field: "This is in the future."})
    if value < project.created_at:
        raise ValidationError({field: "This is before the project existed."})
    return value


def _environments(project: Project, values: Iterable[Any]) -> list[Environment]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValidationError({"environments": "Give a list of environment names."})
    names: list[str] = []
    found: list[Environment] = []
    for value in values:
        if isinstance(value, Environment):
            if value.project_id != project.pk:
                raise ValidationError({"environments": "No such environment in this project."})
            found.append(value)
        elif isinstance(value, str):
            names.append(value)
        else:
            raise ValidationError({"environments": "Give environment names."})
    if names:
        rows = {e.name: e for e in Environment.objects.filter(project=project, name__in=names)}
        missing = [n for n in names if n not in rows]
        if missing:
            raise ValidationError(
                {"environments": f"No environment '{missing[0][:80]}' in this project."}
            )
        found.extend(rows[n] for n in names)
    if not found:
        raise ValidationError({"environments": "Name at least one affected environment."})
    return list({e.pk: e for e in found}.values())


def _services(project: Project, values: Iterable[Any]) -> list[Service]:
    if values is None:
        return []
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValidationError({"services": "Give a list of service names."})
    names: list[str] = []
    found: list[Service] = []
    for value in values:
        if isinstance(value, Service):
            if value.project_id != project.pk:
                raise ValidationError({"services": "No such service in this project."})
            found.append(value)
        elif isinstance(value, str):
            names.append(value)
        else:
            raise ValidationError({"services": "Give service names."})
    if names:
        rows = {s.name: s for s in Service.objects.filter(project=project, name__in=names)}
        missing = [n for n in names if n not in rows]
        if missing:
            raise ValidationError({"services": f"No service '{missing[0][:80]}' in this project."})
        found.extend(rows[n] for n in names)
    return list({s.pk: s for s in found}.values())


def _member_user(project: Project, user: Any, field: str) -> Any:
    if user is None:
        return None
    from django.contrib.auth import get_user_model

    if isinstance(user, str):
        user = get_user_model().objects.filter(username=user).first()
    if user is None or not Membership.objects.filter(project=project, user=user).exists():
        raise ValidationError({field: "Choose a member of the project."})
    return user


# --- Severity policy --------------------------------------------------------------------------


MAX_SLA_SECONDS = 7 * 24 * 3600


def rules_for(project: Project | int) -> dict[str, sla.Rule]:
    project_id = project.pk if isinstance(project, Project) else project
    rows = {
        r.severity: (r.acknowledge_seconds, r.update_seconds)
        for r in SeverityPolicy.objects.filter(project_id=project_id)
    }
    return sla.rules_from(rows)


@transaction.atomic
def set_severity_policy(
    actor: Any,
    membership: Membership,
    severity: str,
    *,
    acknowledge_seconds: int | None,
    update_seconds: int | None,
) -> SeverityPolicy:
    """Change a severity's clocks (project admins). Open incidents of it get new due times."""
    require_role(membership, Membership.Role.ADMIN)
    severity = _severity(severity)
    for field, value in (
        ("acknowledge_seconds", acknowledge_seconds),
        ("update_seconds", update_seconds),
    ):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 0 <= value <= MAX_SLA_SECONDS
        ):
            raise ValidationError(
                {field: f"Give whole seconds from 0 to {MAX_SLA_SECONDS} (a week), or none."}
            )
    if update_seconds == 0:
        raise ValidationError({"update_seconds": "An update interval is at least one second."})
    project = membership.project
    before = {s: (r.acknowledge_seconds, r.update_seconds) for s, r in rules_for(project).items()}
    row, _ = SeverityPolicy.objects.update_or_create(
        project=project,
        severity=severity,
        defaults={
            "acknowledge_seconds": acknowledge_seconds,
            "update_seconds": update_seconds,
            "updated_at": timezone.now(),
            "updated_by": actor if getattr(actor, "is_authenticated", False) else None,
        },
    )
    rule = sla.Rule(severity, acknowledge_seconds, update_seconds)
    for incident in Incident.objects.open().filter(project=project, severity=severity):
        _set_clocks(incident, rule)
        incident.save(update_fields=["acknowledge_due_at", "update_due_at"])
    events.publish(
        project.topic,
        "incident.policy_changed",
        project=project,
        actor=actor,
        obj=row,
        before={"severity": severity, "rule": before[severity]},
        after={"severity": severity, "rule": (acknowledge_seconds, update_seconds)},
        data={"text": f"Severity policy for {severity} changed"},
    )
    return row


def _set_clocks(incident: Incident, rule: sla.Rule) -> None:
    incident.acknowledge_due_at = (
        None if incident.acknowledged_at else sla.due(incident.started_at, rule.acknowledge_seconds)
    )
    base = incident.last_update_at or incident.started_at
    incident.update_due_at = sla.due(base, rule.update_seconds) if incident.is_open else None


# --- Events and entries -----------------------------------------------------------------------


def incident_url(incident: Incident) -> str:
    return reverse("incident-detail", args=[incident.project.slug, incident.number])


def snapshot(incident: Incident) -> dict[str, Any]:
    return {
        "title": incident.title,
        "severity": incident.severity,
        "status": incident.status,
        "commander": incident.commander.username if incident.commander_id else None,
        "started_at": incident.started_at.isoformat(),
        "version": incident.version,
    }


def _entry(
    incident: Incident,
    kind: str,
    text: str,
    *,
    actor: Any = None,
    source: str = TimelineEntry.Source.SYSTEM,
    occurred_at: datetime | None = None,
    subject: dict[str, str] | None = None,
    data: dict[str, Any] | None = None,
    before: dict | None = None,
    after: dict | None = None,
    verb: str | None = None,
) -> TimelineEntry:
    now = timezone.now()
    subject = subject or {}
    entry = TimelineEntry.objects.create(
        incident=incident,
        kind=kind,
        source=source,
        text=text,
        author=actor if getattr(actor, "is_authenticated", False) else None,
        occurred_at=occurred_at or now,
        created_at=now,
        subject_type=subject.get("type", ""),
        subject_id=str(subject.get("id", "")),
        subject_url=subject.get("url", ""),
        data=data or {},
    )
    _publish(incident, verb or f"incident.{kind}", actor, entry=entry, before=before, after=after)
    return entry


def _publish(
    incident: Incident,
    verb: str,
    actor: Any,
    *,
    entry: TimelineEntry | None = None,
    before: dict | None = None,
    after: dict | None = None,
) -> None:
    """One audit event on the project (the audit log and the overview) and a wake-up on the
    incident's own topic for its live page."""
    data = {
        "incident_id": incident.pk,
        "reference": incident.reference,
        "title": incident.title,
        "url": incident_url(incident),
        # A feed line that names the incident: system entries already start with it.
        "text": (
            entry.text
            if entry and entry.text.startswith(incident.reference)
            else f"{incident.reference} {incident.title}: {entry.text}"
            if entry
            else ""
        ),
        "entry_id": entry.pk if entry else None,
        "version": incident.version,
    }
    event = events.publish(
        incident.project.topic,
        verb,
        project=incident.project_id,
        actor=actor,
        obj=incident,
        before=before,
        after=after,
        data=data,
    )
    # The incident page listens here; without a project the audit log lists the change once.
    events.publish(incident.topic, verb, obj=incident, data={**data, "event_id": event.pk})


def _lock(incident: Incident, version: int | None) -> Incident:
    locked = (
        Incident.objects.select_for_update(of=("self",))
        .select_related("project", "commander")
        .get(pk=incident.pk)
    )
    if version is not None and int(version) != locked.version:
        raise StaleVersion(locked)
    return locked


def _bump(incident: Incident, fields: list[str]) -> None:
    incident.version = F("version") + 1
    incident.updated_at = timezone.now()
    incident.save(update_fields=[*fields, "version", "updated_at"])
    incident.refresh_from_db(fields=["version"])


# --- Opening ----------------------------------------------------------------------------------


def _next_number(project: Project) -> int:
    # The project row lock serialises numbering within a project.
    Project.objects.select_for_update().filter(pk=project.pk).first()
    last = Incident.objects.filter(project=project).aggregate(m=Max("number"))["m"]
    return (last or 0) + 1


@transaction.atomic
def open_incident(
    actor: Any,
    membership: Membership | None,
    *,
    title: Any,
    severity: Any,
    environments: Iterable[Any],
    services: Iterable[Any] | None = None,
    summary: Any = "",
    started_at: Any = None,
    commander: Any = None,
    project: Project | None = None,
    cause: str = "",
    opened_because: str = "",
    subject: dict[str, str] | None = None,
) -> Incident:
    """Open an incident. People pass their membership (engineers and up); the system passes
    ``project`` and a ``cause``, and gets the open incident of that cause if there is one."""
    if membership is not None:
        require_role(membership, Membership.Role.ENGINEER)
        project = membership.project
    if project is None:
        raise ValueError("open_incident needs a membership or a project")
    now = timezone.now()
    title = _text(title, "title", required=True, limit=MAX_TITLE, one_line=True)
    severity = _severity(severity)
    summary = _text(summary, "summary", required=False, limit=MAX_SUMMARY)
    envs = _environments(project, environments)
    svcs = _services(project, services or [])
    started = now if started_at in (None, "") else _moment(project, started_at, "started_at", now)
    commander_user = _member_user(project, commander, "commander")
    if cause:
        existing = Incident.objects.open().filter(project=project, cause=cause).first()
        if existing is not None:
            return existing
    incident = Incident(
        project=project,
        number=_next_number(project),
        title=title,
        summary=summary,
        severity=severity,
        started_at=started,
        status_changed_at=now,
        commander=commander_user,
        cause=cause,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
        created_at=now,
        updated_at=now,
        last_update_at=None,
    )
    _set_clocks(incident, rules_for(project)[severity])
    try:
        with transaction.atomic():
            incident.save()
    except IntegrityError:
        # Another worker opened one for the same cause a moment ago.
        if cause:
            existing = Incident.objects.open().filter(project=project, cause=cause).first()
            if existing is not None:
                return existing
        raise
    incident.environments.set(envs)
    incident.services.set(svcs)
    people = [u for u in (actor, commander_user) if getattr(u, "is_authenticated", False)]
    if people:
        incident.participants.add(*people)
    where = ", ".join(e.name for e in envs)
    who = f" by {actor.username}" if getattr(actor, "is_authenticated", False) else ""
    because = f" because {opened_because}" if opened_because else ""
    _entry(
        incident,
        TimelineEntry.Kind.OPENED,
        f"{incident.reference} opened{who} as {severity} in {where}{because}",
        actor=actor,
        occurred_at=now,
        subject=subject,
        after=snapshot(incident),
    )
    return incident


# --- Acknowledging and status -----------------------------------------------------------------


@transaction.atomic
def acknowledge_incident(
    actor: Any, membership: Membership, incident: Incident, *, version: int | None = None
) -> Incident:
    """Someone is on it: stops the acknowledgement clock. Acknowledging twice changes nothing."""
    require_role(membership, Membership.Role.ENGINEER)
    incident = _lock(incident, version)
    if incident.acknowledged_at is not None:
        return incident
    if not incident.is_open:
        raise ValidationError({"status": f"{incident.reference} is {incident.status}."})
    now = timezone.now()
    incident.acknowledged_at = now
    incident.acknowledged_by = actor
    incident.acknowledge_due_at = None
    fields = ["acknowledged_at", "acknowledged_by", "acknowledge_due_at"]
    if incident.commander_id is None:
        incident.commander = actor
        fields.append("commander")
    _bump(incident, fields)
    incident.participants.add(actor)
    late = ""
    if incident.acknowledge_breached_at:
        late = " (after the acknowledgement SLA was breached)"
    _entry(
        incident,
        TimelineEntry.Kind.ACKNOWLEDGED,
        f"{incident.reference} acknowledged by {actor.username}{late}",
        actor=actor,
        after={"acknowledged_at": now.isoformat(), "version": incident.version},
    )
    return incident


@transaction.atomic
def change_status(
    actor: Any,
    membership: Membership,
    incident: Incident,
    status: Any,
    message: Any,
    *,
    version: int | None = None,
) -> Incident:
    """Move along the status table, saying why. Resolving prefills the postmortem; P0 and P1
    incidents close only once their postmortem is reviewed."""
    require_role(membership, Membership.Role.ENGINEER)
    incident = _lock(incident, version)
    if status not in Incident.Status.values:
        raise ValidationError(
            {"status": f"Unknown status; use one of {', '.join(Incident.Status.values)}."}
        )
    allowed = incident.allowed_moves()
    if status not in allowed:
        options = ", ".join(allowed) if allowed else "none (it is closed)"
        raise ValidationError(
            {
                "status": f"{incident.reference} cannot go from {incident.status} to {status}; "
                f"allowed: {options}."
            }
        )
    message = _text(message, "message", required=True, limit=MAX_REASON)
    if status == Incident.Status.CLOSED and incident.severity in ("P0", "P1"):
        from .models import Postmortem

        postmortem = Postmortem.objects.filter(incident=incident).first()
        if postmortem is None or postmortem.reviewed_at is None:
            raise ValidationError(
                {
                    "status": f"A {incident.severity} incident closes only after its postmortem "
                    "is marked reviewed."
                }
            )
    now = timezone.now()
    old = incident.status
    incident.status = status
    incident.status_changed_at = now
    fields = ["status", "status_changed_at", "update_due_at", "resolved_at", "closed_at"]
    if status == Incident.Status.RESOLVED:
        incident.resolved_at = now
    elif status == Incident.Status.CLOSED:
        incident.closed_at = now
    else:
        # Flaring up again reopens the clocks.
        incident.resolved_at = None
        incident.closed_at = None
    # A status change with its reason is an update to stakeholders: the update clock restarts.
    incident.last_update_at = now
    incident.update_breached_at = None
    fields += ["last_update_at", "update_breached_at", "acknowledge_due_at"]
    _set_clocks(incident, rules_for(incident.project_id)[incident.severity])
    _bump(incident, fields)
    if getattr(actor, "is_authenticated", False):
        incident.participants.add(actor)
    _entry(
        incident,
        TimelineEntry.Kind.STATUS,
        f"{incident.reference} moved from {old} to {status} by {actor.username}: {message}",
        actor=actor,
        data={"from": old, "to": status, "message": message},
        before={"status": old},
        after={"status": status, "version": incident.version},
        verb="incident.status_changed",
    )
    if status == Incident.Status.RESOLVED:
        from . import postmortems

        postmortems.prefill(incident)
    return incident


# --- Editing ----------------------------------------------------------------------------------

EDITABLE = ["title", "summary", "severity", "started_at", "commander", "environments", "services"]


@transaction.atomic
def update_incident(
    actor: Any,
    membership: Membership,
    incident: Incident,
    *,
    version: int | None = None,
    **changes: Any,
) -> Incident:
    """Change an incident's details; each change is a timeline entry and part of one event."""
    require_role(membership, Membership.Role.ENGINEER)
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise ValidationError({unknown[0]: "This field cannot be changed here."})
    incident = _lock(incident, version)
    if incident.status == Incident.Status.CLOSED:
        raise ValidationError({"status": f"{incident.reference} is closed."})
    project = incident.project
    now = timezone.now()
    before = snapshot(incident)
    lines: list[str] = []
    fields: list[str] = []
    if "title" in changes:
        title = _text(changes["title"], "title", required=True, limit=MAX_TITLE, one_line=True)
        if title != incident.title:
            lines.append(f"title changed to “{title}”")
            incident.title = title
            fields.append("title")
    if "summary" in changes:
        summary = _text(changes["summary"], "summary", required=False, limit=MAX_SUMMARY)
        if summary != incident.summary:
            lines.append("summary edited")
            incident.summary = summary
            fields.append("summary")
    severity_changed = False
    if "severity" in changes:
        severity = _severity(changes["severity"])
        if severity != incident.severity:
            lines.append(f"severity {incident.severity} → {severity}")
            incident.severity = severity
            fields.append("severity")
            severity_changed = True
    if "started_at" in changes:
        started = _moment(project, changes["started_at"], "started_at", now)
        if started != incident.started_at:
            lines.append(f"start set to {started:%Y-%m-%d %H:%M %Z}")
            incident.started_at = started
            fields.append("started_at")
    if "commander" in changes:
        commander = _member_user(project, changes["commander"] or None, "commander")
        if (commander.pk if commander else None) != incident.commander_id:
            lines.append(f"commander: {commander.username if commander else 'nobody'}")
            incident.commander = commander
            fields.append("commander")
    envs = svcs = None
    if "environments" in changes:
        envs = _environments(project, changes["environments"])
        if {e.pk for e in envs} != set(incident.environments.values_list("pk", flat=True)):
            lines.append("environments: " + ", ".join(e.name for e in envs))
        else:
            envs = None
    if "services" in changes:
        svcs = _services(project, changes["services"])
        if {s.pk for s in svcs} != set(incident.services.values_list("pk", flat=True)):
            lines.append("services: " + (", ".join(s.name for s in svcs) or "none"))
        else:
            svcs = None
    if not lines:
        return incident
    if severity_changed or "started_at" in fields:
        _set_clocks(incident, rules_for(project)[incident.severity])
        fields += ["acknowledge_due_at", "update_due_at"]
    _bump(incident, fields)
    if envs is not None:
        incident.environments.set(envs)
    if svcs is not None:
        incident.services.set(svcs)
    if getattr(actor, "is_authenticated", False):
        incident.participants.add(actor)
        if incident.commander_id:
            incident.participants.add(incident.commander_id)
    _entry(
        incident,
        TimelineEntry.Kind.SEVERITY if severity_changed else TimelineEntry.Kind.CHANGED,
        f"{incident.reference} changed by {actor.username}: " + "; ".join(lines),
        actor=actor,
        before=before,
        after=snapshot(incident),
        verb="incident.changed",
    )
    return incident


# --- Timeline ---------------------------------------------------------------------------------


@transaction.atomic
def add_timeline_entry(
    actor: Any,
    membership: Membership,
    incident: Incident,
    *,
    kind: Any,
    text: Any,
    occurred_at: Any = None,
) -> TimelineEntry:
    """A person's entry. An update to stakeholders restarts the update clock."""
    require_role(membership, Membership.Role.ENGINEER)
    if kind not in TimelineEntry.PERSON_KINDS:
        raise ValidationError(
            {"kind": f"Use one of {', '.join(str(k) for k in TimelineEntry.PERSON_KINDS)}."}
        )
    text = _text(text, "text", required=True, limit=MAX_ENTRY)
    now = timezone.now()
    occurred = (
        now
        if occurred_at in (None, "")
        else _moment(incident.project, occurred_at, "occurred_at", now)
    )
    incident = _lock(incident, None)
    if incident.status == Incident.Status.CLOSED:
        raise ValidationError({"status": f"{incident.reference} is closed."})
    fields: list[str] = []
    if kind == TimelineEntry.Kind.UPDATE and incident.is_open:
        incident.last_update_at = now
        incident.update_breached_at = None
        _set_clocks(incident, rules_for(incident.project_id)[incident.severity])
        fields = ["last_update_at", "update_breached_at", "update_due_at"]
    _bump(incident, fields)
    incident.participants.add(actor)
    return _entry(
        incident,
        kind,
        text,
        actor=actor,
        source=TimelineEntry.Source.PERSON,
        occurred_at=occurred,
        verb="incident.entry_added",
        after={"kind": kind, "occurred_at": occurred.isoformat()},
    )


@transaction.atomic
def edit_timeline_entry(
    actor: Any, membership: Membership, entry: TimelineEntry, *, text: Any, occurred_at: Any = None
) -> TimelineEntry:
    """Only its author edits a person's entry; the edit is audited with the text before."""
    require_role(membership, Membership.Role.ENGINEER)
    entry = (
        TimelineEntry.objects.select_for_update(of=("self",))
        .select_related("incident__project")
        .get(pk=entry.pk)
    )
    if entry.source != TimelineEntry.Source.PERSON or entry.author_id != actor.pk:
        from django.core.exceptions import PermissionDenied

        raise PermissionDenied("Only its author can edit an entry.")
    incident = entry.incident
    if incident.status == Incident.Status.CLOSED:
        raise ValidationError({"status": f"{incident.reference} is closed."})
    before = {"text": entry.text, "occurred_at": entry.occurred_at.isoformat()}
    entry.text = _text(text, "text", required=True, limit=MAX_ENTRY)
    if occurred_at not in (None, ""):
        entry.occurred_at = _moment(incident.project, occurred_at, "occurred_at", timezone.now())
    entry.edited_at = timezone.now()
    entry.save(update_fields=["text", "occurred_at", "edited_at"])
    _publish(
        incident,
        "incident.entry_edited",
        actor,
        entry=entry,
        before=before,
        after={"text": entry.text, "occurred_at": entry.occurred_at.isoformat()},
    )
    return entry


def record_signal(
    incident: Incident, text: str, *, subject: dict[str, str] | None = None
) -> TimelineEntry:
    """What the system saw again about an incident it already has (a check flapping)."""
    return _entry(incident, TimelineEntry.Kind.SIGNAL, text, subject=subject)


# --- SLA evaluation (beat) --------------------------------------------------------------------


def evaluate_sla(now: datetime | None = None) -> int:
    """Stamp and record every clock that ran out since the last evaluation; returns how many.

    Per clock, one transaction: lock the due rows (skipping rows another beat holds), stamp
    them in one UPDATE, and write their timeline entries and events in bulk, so a thousand
    incidents breaching at once cost a handful of statements, and two beats racing record
    each breach once.
    """

    now = now or timezone.now()
    breaches = 0
    for clock in ("acknowledge", "update"):
        due = {
            f"{clock}_due_at__lte": now,
            f"{clock}_breached_at__isnull": True,
        }
        if clock == "acknowledge":
            due["acknowledged_at__isnull"] = True
        with transaction.atomic():
            rows = list(
                Incident.objects.filter(status__in=Incident.OPEN_STATUSES, **due)
                .select_for_update(of=("self",), skip_locked=True)
                .select_related("project")
                .only(
                    "id",
                    "number",
                    "title",
                    "severity",
                    "version",
                    "project_id",
                    "project__slug",
                    f"{clock}_due_at",
                )
            )
            if not rows:
                continue
            Incident.objects.filter(pk__in=[r.pk for r in rows]).update(
                **{f"{clock}_breached_at": now}
            )
            what = "acknowledged" if clock == "acknowledge" else "given a status update"
            entries = TimelineEntry.objects.bulk_create(
                [
                    TimelineEntry(
                        incident=r,
                        kind=TimelineEntry.Kind.BREACH,
                        source=TimelineEntry.Source.SYSTEM,
                        text=f"{r.reference} {r.severity} SLA breached: not {what} by "
                        f"{getattr(r, f'{clock}_due_at'):%H:%M %Z}",
                        occurred_at=getattr(r, f"{clock}_due_at"),
                        created_at=now,
                        data={"clock": clock, "due_at": getattr(r, f"{clock}_due_at").isoformat()},
                    )
                    for r in rows
                ]
            )
            # One row per breach, on the project: the audit log, and the incident page (which
            # follows the project's topic too) refreshes its clocks from it.
            events.publish_many(entry_events(entries, "incident.sla_breached", now))
            breaches += len(rows)
    return breaches


def entry_events(entries: list[TimelineEntry], verb: str, now: datetime) -> list[AuditEvent]:
    """The audit rows, on each incident's project topic, for system timeline entries written in
    bulk (SLA breaches, pages): ``events.publish_many`` writes them in one statement."""
    # A thousand breaches at once: reverse() once per project, not once per incident.
    placeholder = 987654321
    links: dict[str, str] = {}
    rows = []
    for entry in entries:
        incident = entry.incident
        slug = incident.project.slug
        if slug not in links:
            links[slug] = reverse("incident-detail", args=[slug, placeholder])
        rows.append(
            AuditEvent(
                topic=f"project:{incident.project_id}",
                project_id=incident.project_id,
                verb=verb,
                object_type=Incident._meta.label_lower,
                object_id=str(incident.pk),
                created_at=now,
                data={
                    "incident_id": incident.pk,
                    "reference": incident.reference,
                    "title": incident.title,
                    "url": links[slug].replace(str(placeholder), str(incident.number)),
                    "text": entry.text,
                    "entry_id": entry.pk,
                    "version": incident.version,
                },
            )
        )
    return rows


# --- Suspects ---------------------------------------------------------------------------------


@transaction.atomic
def roll_back_suspect(
    actor: Any, membership: Membership, incident: Incident, *, suspect: str, reason: str = ""
) -> str:
    """Roll back a suspect deployment through the app that owns it (the same service, the same
    permissions and audit as its own rollback button), and say so in the timeline."""
    require_role(membership, Membership.Role.ENGINEER)
    from releasecenter import incident_hooks

    from . import selectors

    listed = {s.id: s for s in selectors.suspects(incident)}
    if suspect not in listed:
        raise ValidationError({"suspect": "Not a suspect deployment of this incident."})
    reason = _text(reason, "reason", required=False, limit=MAX_REASON) or (
        f"rolled back from {incident.reference} by {actor.username}"
    )
    url = incident_hooks.roll_back(actor, membership, suspect, reason)
    if url is None:
        raise ValidationError({"suspect": "Nothing can roll this back."})
    target = listed[suspect]
    incident = _lock(incident, None)
    _bump(incident, [])
    incident.participants.add(actor)
    _entry(
        incident,
        TimelineEntry.Kind.SIGNAL,
        f"Rollback of {target.title} requested by {actor.username} from {incident.reference}",
        actor=actor,
        subject={"type": "deployment", "id": suspect.partition(":")[2], "url": url},
        verb="incident.rollback_requested",
    )
    return url
