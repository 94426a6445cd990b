"""Celery tasks of on-call. Thin: each takes ids and calls a service; each is safe to run twice.

Deliveries are sent to the notifications queue (``channels.notifications_queue()``) so that a
slow receiver never delays a health check or a deployment.
"""

from __future__ import annotations

from celery import shared_task

from releasecenter.celery_base import TransientError

from . import channels, status_page


@shared_task(ignore_result=True, soft_time_limit=60, time_limit=90)
def deliver_channel_message(message_id: int) -> None:
    if not channels.deliver(message_id):
        # Bounded by BaseTask.max_retries (3, so MAX_ATTEMPTS tries in all), with backoff; every
        # try is a DeliveryAttempt row.
        raise TransientError(f"channel message {message_id} not delivered yet")


@shared_task(ignore_result=True, soft_time_limit=120, time_limit=150)
def refresh_status_days() -> int:
    """Beat: recompute today's and yesterday's state of every enabled status page's groups."""
    return status_page.refresh_recent()
