"""Time windows (freezes, maintenance windows) in a time zone: weekly recurring ones, and
one-off dated ones (a holiday freeze from 20 December to 5 January).

A window is (start weekday, start time) to (end weekday, end time) on the local wall clock of its
zone, e.g. Friday 16:00 to Monday 08:00 Europe/Berlin; it may wrap around the end of the week.
Arithmetic is done in minutes of the local week so daylight-saving changes move the window with
the wall clock, as people who set "Fri 16:00" expect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEK_MINUTES = 7 * 24 * 60


@dataclass(frozen=True)
class WeeklyWindow:
    start_weekday: int  # Monday = 0
    start_time: time
    end_weekday: int
    end_time: time
    tz: str = "UTC"
    label: str = ""

    def _bounds(self) -> tuple[int, int]:
        start = self.start_weekday * 1440 + self.start_time.hour * 60 + self.start_time.minute
        end = self.end_weekday * 1440 + self.end_time.hour * 60 + self.end_time.minute
        return start, end

    def _local_minute(self, at: datetime) -> tuple[datetime, int]:
        local = at.astimezone(ZoneInfo(self.tz))
        return local, local.weekday() * 1440 + local.hour * 60 + local.minute

    def contains(self, at: datetime) -> bool:
        start, end = self._bounds()
        _, minute = self._local_minute(at)
        if start < end:
            return start <= minute < end
        return minute >= start or minute < end

    def _next_boundary(self, at: datetime, boundary: int) -> datetime:
        local, minute = self._local_minute(at)
        delta = (boundary - minute) % WEEK_MINUTES or WEEK_MINUTES
        wall = local.replace(tzinfo=None, second=0, microsecond=0) + timedelta(minutes=delta)
        return wall.replace(tzinfo=ZoneInfo(self.tz))

    def next_end(self, at: datetime) -> datetime:
        """When the occurrence containing (or next after) `at` ends."""
        return self._next_boundary(at, self._bounds()[1])

    def next_start(self, at: datetime) -> datetime:
        return self._next_boundary(at, self._bounds()[0])


@dataclass(frozen=True)
class DatedWindow:
    """A one-off window between two moments; ``tz`` is the zone it was written in and is shown
    in. It answers like a WeeklyWindow, except that once over it has no next start."""

    start: datetime
    end: datetime
    tz: str = "UTC"
    label: str = ""

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def next_end(self, at: datetime) -> datetime:
        return self.end.astimezone(ZoneInfo(self.tz))

    def next_start(self, at: datetime) -> datetime | None:
        if at >= self.start:
            return None
        return self.start.astimezone(ZoneInfo(self.tz))
