"""Workers announce themselves in the database so /health can count the live ones.

A thread started when the worker is ready upserts a row every HEARTBEAT_SECONDS; a worker whose row
is older than STALE_AFTER is not counted. The database is used (not Redis) so the count works on
the embedded default too.
"""

import threading
from datetime import timedelta

from celery.signals import worker_ready, worker_shutdown
from django.db import close_old_connections, connection
from django.utils import timezone

HEARTBEAT_SECONDS = 10
STALE_AFTER = timedelta(seconds=30)
_stop = threading.Event()


def beat(hostname: str) -> None:
    from .models import WorkerHeartbeat

    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname, defaults={"last_seen": timezone.now()}
    )


def live_worker_count() -> int:
    from .models import WorkerHeartbeat

    return WorkerHeartbeat.objects.filter(last_seen__gte=timezone.now() - STALE_AFTER).count()


def _loop(hostname: str) -> None:
    while not _stop.is_set():
        try:
            close_old_connections()
            beat(hostname)
        except Exception:  # noqa: BLE001, S110 - a missed beat only makes /health undercount
            pass
        finally:
            connection.close()
        _stop.wait(HEARTBEAT_SECONDS)


def _on_ready(sender=None, **kwargs) -> None:  # noqa: ANN001, ANN003
    hostname = getattr(sender, "hostname", None) or "worker"
    _stop.clear()
    threading.Thread(target=_loop, args=(hostname,), daemon=True, name="rc-heartbeat").start()


def _on_shutdown(sender=None, **kwargs) -> None:  # noqa: ANN001, ANN003
    _stop.set()
    from .models import WorkerHeartbeat

    try:
        WorkerHeartbeat.objects.filter(hostname=getattr(sender, "hostname", "")).delete()
    except Exception:  # noqa: BLE001, S110 - the row goes stale on its own
        pass


def connect_signals() -> None:
    worker_ready.connect(_on_ready, weak=False, dispatch_uid="rc-worker-ready")
    worker_shutdown.connect(_on_shutdown, weak=False, dispatch_uid="rc-worker-shutdown")
