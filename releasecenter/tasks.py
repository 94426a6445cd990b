"""Core background tasks. Thin: load, call a service."""

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from . import services
from .models import WorkerHeartbeat


@shared_task(time_limit=60, soft_time_limit=50)
def announce(project_id: int, message: str, actor_id: int | None) -> None:
    services.deliver_announcement(project_id, message, actor_id)


@shared_task(time_limit=60, soft_time_limit=50)
def prune_worker_heartbeats() -> int:
    """Forget workers not seen for a day, so the table does not grow with every restart."""
    deleted, _ = WorkerHeartbeat.objects.filter(
        last_seen__lt=timezone.now() - timedelta(days=1)
    ).delete()
    return deleted
