"""The project-wide Celery task class: bounded retries with backoff for named transient errors."""

import httpx
import redis
from celery import Task
from django.db import InterfaceError, OperationalError


class TransientError(Exception):
    """Raise from a task for a failure worth retrying (a target briefly unavailable)."""


class BaseTask(Task):
    # Only errors that a retry can cure; anything else fails at once and is recorded.
    autoretry_for = (
        TransientError,
        OperationalError,
        InterfaceError,
        redis.ConnectionError,
        httpx.ConnectError,
    )
    max_retries = 3
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True
    acks_late = True
    reject_on_worker_lost = True
