"""The verbs of on-call schedules: create one, add an override, ask who is on call.

Every write validates first (a ValidationError names the field), then writes in one transaction
with an audit event. Who is on call is computed from the rows by ``monitoring.lib.rotation``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from releasecenter import events
from releasecenter.access import require_role
from releasecenter.models import Membership, Project
from releasecenter.services import Conflict

from ..lib import rotation as rot
from .models import Schedule, ScheduleMember, ScheduleOverride

MAX_MEMBERS = 50
CALENDAR_DAYS = 28


def _members_of(project: Project, usernames: Any, field: str = "members") -> list:
    if not isinstance(usernames, list | tuple) or not usernames:
        raise ValidationError({field: "List at least one member (usernames)."})
    if len(usernames) > MAX_MEMBERS:
        raise ValidationError({field: f"At most {MAX_MEMBERS} members."})
    if len(set(usernames)) != len(usernames):
        raise ValidationError({field: "A member is listed twice."})
    users = {
        u.username: u
        for u in get_user_model().objects.filter(
            username__in=[str(n) for n in usernames], memberships__project=project
        )
    }
    missing = [str(n) for n in usernames if n not in users]
    if missing:
        raise ValidationError({field: f"Not a member of this project: {', '.join(missing)}."})
    return [users[n] for n in usernames]


def _zone(name: Any) -> str:
    try:
        rot.parse_time_zone(name)
    except ValueError as exc:
        raise ValidationError({"time_zone": str(exc)}) from None
    return name


@transaction.atomic
def create_schedule(
    actor: Any,
    membership: Membership,
    *,
    name: str,
    time_zone: str,
    rotation: str,
    handoff: Any,
    members: Sequence[str],
    handoff_weekday: int = 0,
    anchor: date | None = None,
) -> Schedule:
    require_role(membership, Membership.Role.LEAD)
    project = membership.project
    name = (name or "").strip()
    if not name or len(name) > 80 or "\x00" in name:
        raise ValidationError({"name": "A name of 1 to 80 characters."})
    _zone(time_zone)
    if rotation not in Schedule.Rotation.values:
        raise ValidationError({"rotation": 'Rotation is "daily" or "weekly".'})
    try:
        handoff_time = rot.parse_handoff(handoff)
    except ValueError as exc:
        raise ValidationError({"handoff": str(exc)}) from None
    if not isinstance(handoff_weekday, int) or not 0 <= handoff_weekday <= 6:
        raise ValidationError({"handoff_weekday": "A weekday from 0 (Monday) to 6 (Sunday)."})
    users = _members_of(project, members)
    if anchor is None:
        anchor = timezone.now().astimezone(rot.parse_time_zone(time_zone)).date()
    schedule = Schedule(
        project=project,
        name=name,
        time_zone=time_zone,
        rotation=rotation,
        handoff=handoff_time,
        handoff_weekday=handoff_weekday,
        anchor=anchor,
    )
    try:
        with transaction.atomic():
            schedule.save()
    except IntegrityError:
        raise Conflict(f"A schedule named '{name}' exists in this project.") from None
    ScheduleMember.objects.bulk_create(
        ScheduleMember(schedule=schedule, user=user, position=i) for i, user in enumerate(users)
    )
    events.publish(
        project.topic,
        "oncall.schedule_created",
        project=project,
        actor=actor,
        obj=schedule,
        after={
            "name": name,
            "time_zone": time_zone,
            "rotation": rotation,
            "handoff": handoff_time.strftime("%H:%M"),
            "members": [u.username for u in users],
        },
        data={
            "text": f"On-call schedule “{name}” created: {rotation} at "
            f"{handoff_time:%H:%M} {time_zone}, {', '.join(u.username for u in users)}"
        },
    )
    return schedule


@transaction.atomic
def add_override(
    actor: Any,
    membership: Membership,
    schedule: Schedule,
    *,
    username: str,
    starts_at: datetime,
    ends_at: datetime,
    reason: str = "",
) -> ScheduleOverride:
    """Someone covers [starts_at, ends_at). Refused when it overlaps another override."""
    require_role(membership, Membership.Role.ENGINEER)
    for field, value in (("starts_at", starts_at), ("ends_at", ends_at)):
        if not isinstance(value, datetime) or timezone.is_naive(value):
            raise ValidationError({field: "A date and time with its time zone."})
    if ends_at <= starts_at:
        raise ValidationError({"ends_at": "An override ends after it starts."})
    if ends_at - starts_at > timedelta(days=90):
        raise ValidationError({"ends_at": "An override covers at most 90 days."})
    [user] = _members_of(schedule.project, [username], field="user")
    # The lock serialises overrides of one schedule, so two requests cannot both pass the
    # overlap check below and then both insert.
    schedule = Schedule.objects.select_for_update().get(pk=schedule.pk)
    clash = (
        ScheduleOverride.objects.filter(
            schedule=schedule, starts_at__lt=ends_at, ends_at__gt=starts_at
        )
        .select_related("user")
        .first()
    )
    if clash is not None:
        raise ValidationError(
            {
                "starts_at": f"Overlaps {clash.user.username}'s override from "
                f"{clash.starts_at:%Y-%m-%d %H:%M} to {clash.ends_at:%Y-%m-%d %H:%M} UTC."
            }
        )
    override = ScheduleOverride.objects.create(
        schedule=schedule,
        user=user,
        starts_at=starts_at,
        ends_at=ends_at,
        reason=(reason or "")[:200],
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    events.publish(
        schedule.project.topic,
        "oncall.override_added",
        project=schedule.project_id,
        actor=actor,
        obj=override,
        after={
            "schedule": schedule.name,
            "user": user.username,
            "starts_at": starts_at.isoformat(),
            "ends_at": ends_at.isoformat(),
        },
        data={
            "text": f"{user.username} covers on-call schedule “{schedule.name}” from "
            f"{starts_at:%Y-%m-%d %H:%M} to {ends_at:%Y-%m-%d %H:%M} UTC"
        },
    )
    return override


# --- Who is on call -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OnCall:
    schedule: Schedule
    user: Any  # None when the schedule has no members
    until: datetime | None
    override: bool = False


def rotation_for(
    schedule: Schedule, members: Sequence[Any], overrides: Iterable[ScheduleOverride]
) -> rot.Rotation:
    return rot.Rotation(
        zone=rot.parse_time_zone(schedule.time_zone),
        kind=schedule.rotation,
        handoff=schedule.handoff,
        anchor=schedule.anchor,
        members=list(members),
        handoff_weekday=schedule.handoff_weekday,
        overrides=[rot.Override(o.starts_at, o.ends_at, o.user) for o in overrides],
    )


def load_rotations(
    schedules: Sequence[Schedule], since: datetime, until: datetime
) -> dict[int, rot.Rotation]:
    """Rotations of many schedules in three queries (schedules given, members, overrides)."""
    ids = [s.pk for s in schedules]
    members: dict[int, list] = {pk: [] for pk in ids}
    for m in ScheduleMember.objects.filter(schedule_id__in=ids).select_related("user"):
        members[m.schedule_id].append(m.user)
    overrides: dict[int, list] = {pk: [] for pk in ids}
    for o in ScheduleOverride.objects.filter(
        schedule_id__in=ids, ends_at__gt=since, starts_at__lt=until
    ).select_related("user"):
        overrides[o.schedule_id].append(o)
    return {s.pk: rotation_for(s, members[s.pk], overrides[s.pk]) for s in schedules}


def on_call(schedules: Sequence[Schedule], at: datetime | None = None) -> list[OnCall]:
    at = at or timezone.now()
    # Overrides a few days ahead, so "until" can end where the next override starts.
    rotations = load_rotations(schedules, at - timedelta(days=8), at + timedelta(days=8))
    result = []
    for schedule in schedules:
        shift = rotations[schedule.pk].on_call(at)
        if shift is None:
            result.append(OnCall(schedule, None, None))
        else:
            result.append(OnCall(schedule, shift.member, shift.ends_at, shift.override))
    return result


def project_on_call(project: Project, at: datetime | None = None) -> list[OnCall]:
    return on_call(list(Schedule.objects.filter(project=project).order_by("name")), at)


def calendar(schedule: Schedule, start: datetime, days: int = CALENDAR_DAYS) -> list[rot.Shift]:
    end = start + timedelta(days=days)
    rotation = load_rotations([schedule], start, end)[schedule.pk]
    return list(rotation.shifts(start, end))
