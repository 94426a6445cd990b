"""Who is on call when: rotations in a schedule's own time zone, with overrides. No database.

A rotation hands off at a wall-clock time in the schedule's time zone ("09:00 Europe/Berlin"),
daily or weekly (on ``handoff_weekday``, Monday = 0). Shift boundaries are computed as local dates
and times and only then turned into instants with ``zoneinfo``, so a 09:00 handoff stays 09:00
local when daylight-saving time starts or ends: the shift across the change is an hour shorter or
longer, never moved. A handoff time that does not exist on a spring-forward day (02:30 where
clocks jump from 02:00 to 03:00) happens at the instant zoneinfo gives that wall time (fold=0),
which is the moment the clocks jump.

The shift number counts handoffs since the ``anchor`` date (the first shift's local date), and the
member on call is ``members[n % len(members)]``; dates before the anchor simply count backwards.

An override ("Ana covers Tuesday 18:00 to Wednesday 09:00") replaces whoever the rotation names
for its window. Overrides of one schedule never overlap (the service refuses that), so at any
instant at most one applies.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

DAILY = "daily"
WEEKLY = "weekly"


def parse_time_zone(name: str) -> ZoneInfo:
    """The zone of an IANA name; ValueError for anything else (including paths and "")."""
    if not isinstance(name, str) or not name or name not in _zone_names():
        raise ValueError(f"Unknown time zone {name!r}; use an IANA name like 'Europe/Berlin'.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"Unknown time zone {name!r}.") from None


_ZONES: frozenset[str] | None = None


def _zone_names() -> frozenset[str]:
    global _ZONES  # noqa: PLW0603 - computed once; reading the tz database costs ~50 ms
    if _ZONES is None:
        _ZONES = frozenset(available_timezones()) | {"UTC"}
    return _ZONES


def parse_handoff(text: str) -> time:
    """ "09:00" or "9:30" (24-hour clock) to a time; ValueError otherwise."""
    if isinstance(text, time):
        return text.replace(second=0, microsecond=0, tzinfo=None)
    parts = str(text).strip().split(":")
    if len(parts) != 2 or not all(re.fullmatch(r"[0-9]{1,2}", p) for p in parts):
        raise ValueError(f"Handoff {text!r} is not a time like '09:00'.")
    hour, minute = int(parts[0]), int(parts[1])
    if hour > 23 or minute > 59:
        raise ValueError(f"Handoff {text!r} is not a time of day (00:00 to 23:59).")
    return time(hour, minute)


@dataclass(frozen=True)
class Override:
    starts_at: datetime
    ends_at: datetime
    member: object


@dataclass(frozen=True)
class Shift:
    starts_at: datetime
    ends_at: datetime
    member: object
    override: bool = False


@dataclass(frozen=True)
class Rotation:
    zone: ZoneInfo
    kind: str  # DAILY or WEEKLY
    handoff: time
    anchor: date
    members: Sequence[object]
    handoff_weekday: int = 0
    overrides: Sequence[Override] = ()

    @property
    def period_days(self) -> int:
        return 7 if self.kind == WEEKLY else 1

    def _first_day(self) -> date:
        # Weekly rotations hand off on their weekday: the first shift starts on the last such
        # day at or before the anchor.
        if self.kind != WEEKLY:
            return self.anchor
        return self.anchor - timedelta(days=(self.anchor.weekday() - self.handoff_weekday) % 7)

    def boundary(self, n: int) -> datetime:
        """The instant shift n starts (n may be negative), in UTC."""
        day = self._first_day() + timedelta(days=n * self.period_days)
        return datetime.combine(day, self.handoff, tzinfo=self.zone).astimezone(UTC)

    def shift_number(self, at: datetime) -> int:
        local = at.astimezone(self.zone)
        day = local.date()
        days = (day - self._first_day()).days
        n = days // self.period_days
        # The wall clock decides, compared as instants so an ambiguous hour is handled too.
        while self.boundary(n) > at:
            n -= 1
        while self.boundary(n + 1) <= at:
            n += 1
        return n

    def rotation_member(self, n: int) -> object | None:
        if not self.members:
            return None
        return self.members[n % len(self.members)]

    def _override_at(self, at: datetime) -> Override | None:
        for override in self.overrides:
            if override.starts_at <= at < override.ends_at:
                return override
        return None

    def on_call(self, at: datetime) -> Shift | None:
        """Who is on call at ``at`` and until when (the next change of person or handoff)."""
        override = self._override_at(at)
        if override is not None:
            return Shift(override.starts_at, override.ends_at, override.member, override=True)
        n = self.shift_number(at)
        member = self.rotation_member(n)
        if member is None:
            return None
        start, end = self.boundary(n), self.boundary(n + 1)
        for o in self.overrides:
            if o.ends_at <= at and o.ends_at > start:
                start = o.ends_at
            if o.starts_at > at and o.starts_at < end:
                end = o.starts_at
        return Shift(start, end, member)

    def shifts(self, start: datetime, end: datetime) -> Iterator[Shift]:
        """Every shift that overlaps [start, end), overrides applied, cut to that window."""
        at = start
        while at < end:
            shift = self.on_call(at)
            if shift is None:
                return
            yield Shift(
                max(shift.starts_at, start), min(shift.ends_at, end), shift.member, shift.override
            )
            at = shift.ends_at


def overlapping(new: Override, existing: Sequence[Override]) -> Override | None:
    """The first existing override whose window overlaps the new one (touching is fine)."""
    for other in existing:
        if new.starts_at < other.ends_at and other.starts_at < new.ends_at:
            return other
    return None
