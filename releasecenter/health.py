"""GET /health: is this replica able to serve? Checks the database, Redis, storage and workers."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse

from . import storage
from .worker_heartbeat import live_worker_count


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _check_redis() -> str:
    if not settings.REDIS_URL:
        return "absent"
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def _check_storage() -> str:
    return storage.probe()


def health_view(request):  # noqa: ANN001, ANN201
    body: dict[str, object] = {"status": "ok"}
    failing = []
    for name, check in (
        ("database", _check_database),
        ("redis", _check_redis),
        ("storage", _check_storage),
    ):
        try:
            body[name] = check()
        except Exception as exc:  # noqa: BLE001 - any failure of a dependency is a 503
            body[name] = f"error: {type(exc).__name__}"
            failing.append(name)
    try:
        body["workers"] = live_worker_count() if "database" not in failing else 0
    except Exception:  # noqa: BLE001
        body["workers"] = 0
    if failing:
        body["status"] = "error"
        body["failing"] = failing
        return JsonResponse(body, status=503)
    return JsonResponse(body)
