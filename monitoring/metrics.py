"""Health-check gauges for /metrics (releasecenter.metrics.register_gauge, in MonitoringConfig)."""

from __future__ import annotations

from django.db.models import Count

from .models import Check


def checks_by_state() -> dict[tuple[str, ...], float]:
    """Enabled checks and smoke suites by the state of their latest result."""
    counts = dict.fromkeys(Check.Status.values, 0)
    rows = (
        Check.objects.filter(enabled=True, parent__isnull=True)
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
    )
    counts.update(dict(rows))
    return {(state,): float(n) for state, n in counts.items()}


def register() -> None:
    from releasecenter import metrics

    metrics.register_gauge(
        "releasecenter_checks",
        "Enabled health checks and smoke suites by the state of their latest result.",
        ["state"],
        checks_by_state,
    )
