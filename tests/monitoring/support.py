"""Helpers for the monitoring app's Django tests. Django imports stay inside functions so the
library's tests in this folder still run with ``-p no:django``."""

from __future__ import annotations

import json
import threading
from typing import Any

from monitoring.lib.testing import TargetServer

ALLOW_LOOPBACK = "127.0.0.1"


def allow(environment: Any, allow_list: str = ALLOW_LOOPBACK, **fields: Any) -> Any:
    """Set an environment's monitoring settings directly (bootstrap, like the demo does)."""
    from monitoring.models import EnvironmentMonitoring

    row, _ = EnvironmentMonitoring.objects.update_or_create(
        environment=environment, defaults={"allow_list": allow_list, **fields}
    )
    environment.monitoring = row
    return row


def make_check(personas: Any, url: str, *, user: Any = None, **fields: Any) -> Any:
    from monitoring import services

    user = user or personas.member
    fields.setdefault("environment", personas.staging)
    fields.setdefault("name", f"check {url}")
    return services.create_check(user, personas.membership(user), url=url, **fields)


def run(check: Any, trigger: str = "manual", **options: Any) -> Any:
    from monitoring import services

    [outcome] = services.run_units(services.load_checks([check.pk]), trigger=trigger, **options)
    return outcome


class Switchable:
    """A route whose status the test flips, to drive a check between passing and failing."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.lock = threading.Lock()

    def __call__(self, handler: Any, query: dict[str, str]) -> None:
        with self.lock:
            status = self.status
        body = json.dumps({"status": "ok" if status < 400 else "down"}).encode()
        handler._send(status, body, "application/json")


def hook_route(handler: Any, query: dict[str, str]) -> None:
    handler._send(200, b"ok")


def webhook_bodies(server: TargetServer, path: str = "/hook") -> list[dict]:
    return [json.loads(r.body) for r in list(server.requests) if r.path == path]
