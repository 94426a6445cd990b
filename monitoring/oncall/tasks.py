"""Celery tasks of on-call. Thin: each takes ids and calls a service; each is safe to run twice.

Their names route them (``releasecenter.queues``): ``deliver_notification_message`` and
``escalation_tick`` run on the notifications queue, so a slow receiver or a long rollout never
delays a page; keep "notif" / "escalat" in the names of tasks that page.
"""

from __future__ import annotations

from celery import shared_task

from releasecenter.celery_base import TransientError

from . import channels, escalation, status_page


@shared_task(ignore_result=True, soft_time_limit=60, time_limit=90)
def deliver_notification_message(message_id: int) -> None:
    if not channels.deliver(message_id):
        # Bounded by BaseTask.max_retries (3, so MAX_ATTEMPTS tries in all), with backoff; every
        # try is a DeliveryAttempt row.
        raise TransientError(f"channel message {message_id} not delivered yet")


@shared_task(ignore_result=True, soft_time_limit=120, time_limit=150)
def refresh_status_days() -> int:
    """Beat: recompute today's and yesterday's state of every enabled status page's groups."""
    return status_page.refresh_recent()


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def escalation_tick(incident_ids: list[int] | None = None) -> int:
    """Beat, every few seconds (and at once for a new incident): page what is due. Safe to run
    twice at the same time: each page is claimed by a unique row."""
    return escalation.tick(incident_ids=incident_ids)


def on_incident_event(event) -> None:  # noqa: ANN001
    """A new incident pages level 1 now rather than at the next beat."""
    if event.verb == "incident.opened" and event.object_id:
        escalation_tick.delay([int(event.object_id)])
