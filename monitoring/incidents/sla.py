"""The two SLA clocks of an incident: time to acknowledge and the stakeholder-update cadence.

Pure functions of a policy and the times involved, so they can be tested without a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings

from .models import DEFAULT_POLICY, SEVERITIES

WORKDAY_STARTS = time(9, 0)


@dataclass(frozen=True)
class Rule:
    severity: str
    # Seconds; 0 is "immediately", None "by the next working day".
    acknowledge_seconds: int | None
    update_seconds: int | None

    @staticmethod
    def describe(seconds: int | None) -> str:
        if seconds is None:
            return "Next working day"
        if seconds == 0:
            return "Immediately"
        for unit, size in (("hour", 3600), ("minute", 60)):
            if seconds % size == 0:
                count = seconds // size
                return f"{count} {unit}{'s' if count != 1 else ''}"
        return f"{seconds} second{'s' if seconds != 1 else ''}"

    @staticmethod
    def as_input(seconds: int | None) -> str:
        """The form's spelling of a value: "15m", "2h", "90s", or empty for None."""
        if seconds is None:
            return ""
        for suffix, size in (("h", 3600), ("m", 60)):
            if seconds and seconds % size == 0:
                return f"{seconds // size}{suffix}"
        return f"{seconds}s"

    @property
    def acknowledge_label(self) -> str:
        return self.describe(self.acknowledge_seconds)

    @property
    def update_label(self) -> str:
        return self.describe(self.update_seconds)

    @property
    def acknowledge_input(self) -> str:
        return self.as_input(self.acknowledge_seconds)

    @property
    def update_input(self) -> str:
        return self.as_input(self.update_seconds)


def next_working_day(after: datetime) -> datetime:
    """09:00 on the first weekday after the day of ``after``, in the site's time zone."""
    zone = ZoneInfo(settings.TIME_ZONE)
    day = after.astimezone(zone).date() + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime.combine(day, WORKDAY_STARTS, tzinfo=zone)


def due(start: datetime, seconds: int | None) -> datetime:
    if seconds is None:
        return next_working_day(start)
    return start + timedelta(seconds=seconds)


def rules_from(rows: dict[str, tuple[int | None, int | None]]) -> dict[str, Rule]:
    """The full table, rows given for some severities and defaults for the rest."""
    merged = {**DEFAULT_POLICY, **rows}
    return {s: Rule(s, *merged[s]) for s in SEVERITIES}
