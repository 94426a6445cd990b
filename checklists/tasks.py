"""Checklist background work. Thin: load, call a service. Each task is safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from . import services
from .models import RunItem


@shared_task(time_limit=300, soft_time_limit=280)
def run_automated_item(run_item_id: int, actor_id: int | None = None) -> str:
    """Run an item's automated check. A redelivered task finds the item no longer open and
    does nothing."""
    run_item = RunItem.objects.filter(pk=run_item_id).first()
    if run_item is None:
        return "gone"
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    try:
        row = services.run_automated_item(actor, run_item)
    except ValidationError as exc:
        return " ".join(exc.messages)
    return row.state


@shared_task(time_limit=120, soft_time_limit=110)
def open_recurring_runs() -> int:
    """Beat, every minute: open the runs of schedules whose occurrence has come."""
    return len(services.create_due_recurring_runs())


@shared_task(time_limit=120, soft_time_limit=110)
def flag_missed_runs() -> int:
    """Beat, every minute: flag recurring runs still open after their deadline."""
    return services.flag_missed_runs()


@shared_task(time_limit=120, soft_time_limit=110)
def queue_due_automations() -> int:
    """Beat, every minute: queue the automated checks of items whose phase has begun."""
    return len(services.queue_due_automations())
