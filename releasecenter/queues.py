"""Which Celery queue each task runs on, so one kind of work never waits behind another.

A deployment holds a worker process for its whole rollout (minutes). If health checks and
notifications shared its queue, a few long rollouts would occupy every process and every check
and page would wait for them. So the work is split four ways, and each queue gets workers of its
own (Procfile, docker-compose.yml, deploy/kubernetes/):

- ``deployments``: rollouts, long and few;
- ``checks``: health checks and automated checklist items, short and many, on a schedule;
- ``notifications``: notifications and escalation, which must go out while everything else is busy;
- ``default``: everything else (the reaper, retention, recurring checklists, announcements).

The reaper runs on ``default``, not ``deployments``: it must run precisely when the deployment
workers are all busy or dead.

The whole routing is read here, like the beat schedule in releasecenter/schedule.py: a task is
routed by its dotted name against the glob patterns below, first match wins; a task no pattern
names runs on ``default``. A new task that is a health check, a notification or an escalation
belongs to its queue by its name (``…escalat…``, ``…notif…``), so add a pattern only for a new kind.

Every queue name carries ``CELERY_QUEUE_PREFIX`` (empty in production): each test run and
benchmark uses a prefix of its own, so a worker of another run on the same Redis never takes its
jobs.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from django.conf import settings

DEPLOYMENTS = "deployments"
CHECKS = "checks"
NOTIFICATIONS = "notifications"
DEFAULT = "default"
QUEUES = (DEPLOYMENTS, CHECKS, NOTIFICATIONS, DEFAULT)

ROUTES: tuple[tuple[str, str], ...] = (
    ("deployments.tasks.run_deployment", DEPLOYMENTS),
    ("deployments.tasks.*rollback*", DEPLOYMENTS),
    ("monitoring.tasks.dispatch_due_checks", CHECKS),
    ("monitoring.tasks.run_batch", CHECKS),
    ("monitoring.tasks.run_requested", CHECKS),
    ("checklists.tasks.run_automated_item", CHECKS),
    ("*.tasks.*notif*", NOTIFICATIONS),
    ("*.tasks.*escalat*", NOTIFICATIONS),
)


def queue_name(kind: str, prefix: str | None = None) -> str:
    """The broker's name of a queue kind (one of QUEUES), with this run's prefix."""
    if kind not in QUEUES:
        raise ValueError(f"unknown queue {kind!r}; the queues are {', '.join(QUEUES)}")
    return f"{settings.CELERY_QUEUE_PREFIX if prefix is None else prefix}{kind}"


def all_queue_names() -> list[str]:
    """Every queue's name, for a worker that takes all work (the demo, the tests)."""
    return [queue_name(kind) for kind in QUEUES]


def queue_kind_for(task_name: str) -> str:
    for pattern, kind in ROUTES:
        if fnmatchcase(task_name, pattern):
            return kind
    return DEFAULT


def route_task(
    name: str, args: Any, kwargs: Any, options: dict, task: Any = None, **kw: Any
) -> dict:
    """Celery router (CELERY_TASK_ROUTES). An explicit ``queue=`` given to apply_async still wins."""
    return {"queue": queue_name(queue_kind_for(name))}
