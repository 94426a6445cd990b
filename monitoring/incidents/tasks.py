"""Celery tasks of incident response. Thin: they call a service."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def evaluate_incident_sla() -> int:
    """Beat, every 15 s: record each SLA clock that ran out (once per clock, however many
    beats overlap)."""
    return services.evaluate_sla()
