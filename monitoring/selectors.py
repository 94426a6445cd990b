"""Reads for the monitoring pages and the project overview.

Nothing here scans raw results for a page of many checks: the current state is on the ``Check``
rows, uptime and sparklines come from ``CheckRollup``. Each function issues a fixed number of
queries whatever the number of results stored.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.db.models import Case, Count, IntegerField, Q, Sum, Value, When
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from releasecenter.models import Environment, Project, Service

from .models import Check, CheckResult, CheckRollup, PerformanceTarget

SPARK_HOURS = 24
CHART_HOURS = 24
CHART_MAX_POINTS = 500

GRID_CHECK_FIELDS = (
    "pk",
    "name",
    "environment_id",
    "service_id",
    "status",
    "enabled",
    "last_latency_ms",
    "last_summary",
)


class GridCheck(NamedTuple):
    """What a grid cell needs of a check."""

    pk: int
    name: str
    environment_id: int
    service_id: int | None
    status: str
    enabled: bool
    last_latency_ms: float | None
    last_summary: str


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class Uptime:
    runs: int = 0
    failures: int = 0

    @property
    def percent(self) -> float | None:
        if not self.runs:
            return None
        return 100.0 * (self.runs - self.failures) / self.runs

    def __str__(self) -> str:
        percent = self.percent
        if percent is None:
            return "–"
        # Two decimals, but never round a failure away to "100 %".
        text = f"{percent:.2f}"
        if text == "100.00" and self.failures:
            text = "99.99"
        return f"{text.rstrip('0').rstrip('.')} %"

    def add(self, runs: int, failures: int) -> None:
        self.runs += runs or 0
        self.failures += failures or 0


@dataclass
class Cell:
    environment: Environment
    service: Service | None
    checks: list[Check | GridCheck] = field(default_factory=list)
    uptime: dict[str, Uptime] = field(
        default_factory=lambda: {"day": Uptime(), "week": Uptime(), "month": Uptime()}
    )
    # Per hour of the last day, oldest first: latency summed over timed runs, and their count.
    latency_sums: list[float] = field(default_factory=lambda: [0.0] * SPARK_HOURS)
    latency_counts: list[int] = field(default_factory=lambda: [0] * SPARK_HOURS)

    @property
    def status(self) -> str:
        states = {c.status for c in self.checks if c.enabled}
        if not self.checks:
            return "none"
        if Check.Status.FAILING in states:
            return "failing"
        if Check.Status.PASSING in states:
            return "passing"
        return "unknown"

    @property
    def failing(self) -> list[Check]:
        return [c for c in self.checks if c.status == Check.Status.FAILING and c.enabled]

    @property
    def latencies(self) -> list[float | None]:
        return [
            s / n if n else None
            for s, n in zip(self.latency_sums, self.latency_counts, strict=True)
        ]

    @property
    def last_latency(self) -> float | None:
        values = [c.last_latency_ms for c in self.checks if c.last_latency_ms is not None]
        return max(values) if values else None


@dataclass
class GridRow:
    service: Service | None
    cells: list[Cell]


def health_grid(
    project: Project,
    environments: list[Environment],
    services: list[Service],
    *,
    include_environment_wide: bool = True,
    now: datetime | None = None,
) -> list[GridRow]:
    """Rows of services (the page's), columns of environments; three queries in all."""
    now = now or timezone.now()
    service_ids = [s.pk for s in services]
    where = Q(service_id__in=service_ids)
    if include_environment_wide:
        where |= Q(service__isnull=True)
    # Plain rows, not model instances: a page holds a hundred or more.
    checks = [
        GridCheck(*row)
        for row in Check.objects.filter(where, project=project, parent__isnull=True)
        .order_by("name")
        .values_list(*GRID_CHECK_FIELDS)
    ]
    cells: dict[tuple[int | None, int], Cell] = {}
    env_by_id = {e.pk: e for e in environments}
    service_by_id: dict[int | None, Service | None] = {s.pk: s for s in services}
    service_by_id[None] = None
    for service_id in service_by_id:
        for env in environments:
            cells[(service_id, env.pk)] = Cell(env, service_by_id[service_id])
    by_check: dict[int, Cell] = {}
    for check in checks:
        cell = cells.get((check.service_id, check.environment_id))
        if cell is not None and check.environment_id in env_by_id:
            cell.checks.append(check)
            by_check[check.pk] = cell
    if by_check:
        _fill_rollups(by_check, now)
    rows = []
    if include_environment_wide and any(cells[(None, e.pk)].checks for e in environments):
        rows.append(GridRow(None, [cells[(None, e.pk)] for e in environments]))
    for service in services:
        rows.append(GridRow(service, [cells[(service.pk, e.pk)] for e in environments]))
    return rows


def _fill_rollups(by_check: dict[int, Cell], now: datetime) -> None:
    """Uptime over 24 h / 7 d / 30 d and hourly latency of the last 24 h, for many checks.

    Two queries over rollups: the last day's hourly buckets (numbered by the database, so no
    timestamps need parsing here) and the daily buckets of the month, summed per check.
    """
    first_hour = _hour(now) - timedelta(hours=SPARK_HOURS - 1)
    ids = list(by_check)
    slot = Case(
        *(
            When(start=first_hour + timedelta(hours=index), then=Value(index))
            for index in range(SPARK_HOURS)
        ),
        default=Value(-1),
        output_field=IntegerField(),
    )
    for check_id, index, runs, failures, count, total in (
        CheckRollup.objects.filter(
            health_check_id__in=ids, span=CheckRollup.Span.HOUR, start__gte=first_hour
        )
        .annotate(slot=slot)
        .values_list(
            "health_check_id", "slot", "runs", "failures", "latency_count", "latency_sum_ms"
        )
    ):
        cell = by_check[check_id]
        cell.uptime["day"].add(runs, failures)
        if index >= 0 and count:
            cell.latency_sums[index] += total
            cell.latency_counts[index] += count
    # Days are whole UTC days, today included: "7 d" is today and the six days before it.
    day = _day(now)
    week = day - timedelta(days=6)
    month = day - timedelta(days=29)
    for row in (
        CheckRollup.objects.filter(
            health_check_id__in=ids, span=CheckRollup.Span.DAY, start__gte=month
        )
        .values("health_check_id")
        .annotate(
            runs30=Sum("runs"),
            failures30=Sum("failures"),
            runs7=Sum("runs", filter=Q(start__gte=week)),
            failures7=Sum("failures", filter=Q(start__gte=week)),
        )
        .order_by()
    ):
        cell = by_check[row["health_check_id"]]
        cell.uptime["month"].add(row["runs30"], row["failures30"])
        cell.uptime["week"].add(row["runs7"], row["failures7"])


def check_uptime(check: Check, now: datetime | None = None) -> dict[str, Uptime]:
    cell = Cell(check.environment, check.service, [check])
    _fill_rollups({check.pk: cell}, now or timezone.now())
    return cell.uptime


def chart_points(
    check: Check, now: datetime | None = None
) -> list[tuple[datetime, float | None, bool]]:
    """(started_at, latency, passed) of the last CHART_HOURS, oldest first."""
    now = now or timezone.now()
    rows = list(
        CheckResult.objects.filter(
            health_check=check, started_at__gte=now - timedelta(hours=CHART_HOURS)
        )
        .order_by("-started_at")
        .values_list("started_at", "latency_ms", "passed", "status_code")[:CHART_MAX_POINTS]
    )
    rows.reverse()
    return [
        (at, latency if code is not None else None, passed) for at, latency, passed, code in rows
    ]


def failures(check: Check):  # noqa: ANN201
    return CheckResult.objects.filter(health_check=check, passed=False).order_by("-started_at")


def results(check: Check):  # noqa: ANN201
    return CheckResult.objects.filter(health_check=check).order_by("-started_at")


# --- The project overview -------------------------------------------------------------------


def overview_panels(project: Project, environments: list) -> dict[int, dict[str, Any]]:
    """The "health" value of each environment on the project overview: checks by state, the
    failing ones by name, and targets above their threshold. Three queries."""
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for env_id, status, n in (
        Check.objects.filter(project=project, parent__isnull=True, enabled=True)
        .values_list("environment_id", "status")
        .annotate(n=Count("pk"))
        .order_by()
    ):
        counts[env_id][status] = n
    failing: dict[int, list[str]] = defaultdict(list)
    for env_id, name in Check.objects.filter(
        project=project, parent__isnull=True, enabled=True, status=Check.Status.FAILING
    ).values_list("environment_id", "name")[:100]:
        failing[env_id].append(name)
    targets: dict[int, list[PerformanceTarget]] = defaultdict(list)
    for target in PerformanceTarget.objects.filter(
        environment__project=project,
        status__in=[PerformanceTarget.Status.BREACHED, PerformanceTarget.Status.WARNING],
    ):
        targets[target.environment_id].append(target)
    url = reverse("health-index", args=[project.slug])
    panels: dict[int, dict[str, Any]] = {}
    for env in environments:
        by_state = counts.get(env.pk)
        if not by_state and not targets.get(env.pk):
            continue
        panels[env.pk] = {
            "health": health_summary(url, by_state or {}, failing[env.pk], targets[env.pk])
        }
    return panels


def health_summary(
    url: str, by_state: dict[str, int], failing: list[str], targets: list[PerformanceTarget]
) -> SafeString:
    parts = []
    total = sum(by_state.values())
    if total:
        bad = by_state.get(Check.Status.FAILING, 0)
        good = by_state.get(Check.Status.PASSING, 0)
        label = f"{good} of {total} check{'s' if total != 1 else ''} passing"
        parts.append(
            format_html(
                '<a href="{}" class="health-state {}">{}</a>',
                url,
                "failing" if bad else "passing" if good == total else "unknown",
                label,
            )
        )
    if failing:
        shown = ", ".join(failing[:3]) + (
            f" and {len(failing) - 3} more" if len(failing) > 3 else ""
        )
        parts.append(format_html('<span class="health-failing">failing: {}</span>', shown))
    parts.extend(
        format_html(
            '<span class="target-{}">{}: {}{} {} {}{}</span>',
            t.status,
            t.get_metric_display(),
            f"{t.last_value:g}" if t.last_value is not None else "?",
            t.unit,
            "above alert" if t.status == PerformanceTarget.Status.BREACHED else "above target",
            f"{(t.alert_threshold if t.status == 'breached' else t.target):g}",
            t.unit,
        )
        for t in targets
    )
    return format_html_join(" · ", "{}", ((p,) for p in parts))
