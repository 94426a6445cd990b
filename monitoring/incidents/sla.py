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
    # Minutes; 0 is "immediately", None "by the next working day".
    acknowledge_minutes: int | None
    update_minutes: int | None

    @staticmethod
    def describe(minutes: int | None) -> str:
        if minutes is None:
            return "Next working day"
        if minutes == 0:
            return "Immediately"
        if minutes % 60 == 0:
            hours = minutes // 60
            return f"{hours} hour{'s' if hours != 1 else ''}"
        return f"{minutes} minutes"

    @property
    def acknowledge_label(self) -> str:
        return self.describe(self.acknowledge_minutes)

    @property
    def update_label(self) -> str:
        return self.describe(self.update_minutes)


def next_working_day(after: datetime) -> datetime:
    """09:00 on the first weekday after the day of ``after``, in the site's time zone."""
    zone = ZoneInfo(settings.TIME_ZONE)
    day = after.astimezone(zone).date() + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime.combine(day, WORKDAY_STARTS, tzinfo=zone)


def due(start: datetime, minutes: int | None) -> datetime:
    if minutes is None:
        return next_working_day(start)
    return start + timedelta(minutes=minutes)


def rules_from(rows: dict[str, tuple[int | None, int | None]]) -> dict[str, Rule]:
    """The full table, rows given for some severities and defaults for the rest."""
    merged = {**DEFAULT_POLICY, **rows}
    return {s: Rule(s, *merged[s]) for s in SEVERITIES}
