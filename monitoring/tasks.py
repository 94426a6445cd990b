"""Celery tasks of monitoring. Thin: each takes ids or tokens and calls a service.

Every task is safe to run twice: batches and run requests are claimed with a token that the
first delivery clears, notifications with a conditional update of their row.
"""

from __future__ import annotations

from celery import shared_task

from releasecenter.celery_base import TransientError

from . import heartbeats, notify, services
from .models import CheckResult

# A batch holds up to RUN_BATCH checks, each bounded by its own timeout (60 s at most) and at
# most PER_HOST_LIMIT at a time per target, so a batch of slow checks on one host is the worst
# case this leaves room for.
BATCH_SOFT_LIMIT = 900


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def dispatch_due_checks() -> int:
    """Beat, every few seconds: claim what is due and enqueue it in batches."""
    return len(services.claim_due_checks())


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def mark_late_heartbeats() -> int:
    """Beat, every few seconds: fail the heartbeat checks whose ping is overdue."""
    return len(heartbeats.mark_late())


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def record_ping_inbox() -> int:
    """Queued by a web process after it took pings in: record what waits in the ping inbox."""
    return heartbeats.drain()


@shared_task(ignore_result=True, soft_time_limit=BATCH_SOFT_LIMIT, time_limit=BATCH_SOFT_LIMIT + 60)
def run_batch(token: str, ids: list[int] | None = None) -> int:
    # ids: the batch's checks, from the dispatcher (messages queued before they were added have
    # none); the token still decides which of them this delivery runs.
    return len(services.run_batch(token, ids))


@shared_task(ignore_result=True, soft_time_limit=BATCH_SOFT_LIMIT, time_limit=BATCH_SOFT_LIMIT + 60)
def run_requested(check_id: int, token: str, actor_id: int | None = None) -> bool:
    """ "Run now" from the UI; the result reaches the page as a "check.ran" event."""
    from django.contrib.auth import get_user_model

    check = services.take_run_request(check_id, token)
    if check is None:
        return False
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    services.run_units([check], trigger=CheckResult.Trigger.MANUAL, actor=actor)
    return True


@shared_task(ignore_result=True, soft_time_limit=60, time_limit=90)
def deliver_notification(notification_id: int) -> None:
    if not notify.deliver(notification_id):
        # Bounded by BaseTask.max_retries, with backoff; the row records the last error.
        raise TransientError(f"notification {notification_id} not fully delivered")


@shared_task(ignore_result=True, soft_time_limit=600, time_limit=660)
def prune_results() -> dict:
    return services.prune()


@shared_task(ignore_result=True, soft_time_limit=600, time_limit=660)
def demo_nightly_cleanup() -> dict:
    """The demo's cron job (beat, 03:00 UTC): retention, then a ping of its heartbeat check."""
    from . import demo

    return demo.nightly_cleanup()


@shared_task(ignore_result=True, soft_time_limit=120, time_limit=150)
def evaluate_targets() -> int:
    return len(services.evaluate_targets())


# Incident response keeps its tasks beside its services; importing them registers them.
from .incidents.tasks import evaluate_incident_sla  # noqa: E402, F401
