"""Deployment gauges for /metrics (releasecenter.metrics.register_gauge, in DeploymentsConfig)."""

from __future__ import annotations

from django.db.models import Count, Min
from django.utils import timezone

from .models import Deployment


def deployments_by_status() -> dict[tuple[str, ...], float]:
    counts = dict.fromkeys(Deployment.Status.values, 0)
    rows = Deployment.objects.order_by().values_list("status").annotate(n=Count("id"))
    counts.update(dict(rows))
    return {(status,): float(n) for status, n in counts.items()}


def oldest_queued_deployment_age() -> dict[tuple[str, ...], float]:
    """How long the oldest deployment still waiting for a worker has waited (0 when none)."""
    oldest = Deployment.objects.filter(status=Deployment.Status.QUEUED).aggregate(
        at=Min("created_at")
    )["at"]
    age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    return {(): max(0.0, age)}


def register() -> None:
    from releasecenter import metrics

    metrics.register_gauge(
        "releasecenter_deployments", "Deployments by status.", ["status"], deployments_by_status
    )
    metrics.register_gauge(
        "releasecenter_deployment_oldest_queued_seconds",
        "How long the oldest queued deployment has waited for a worker.",
        [],
        oldest_queued_deployment_age,
    )
