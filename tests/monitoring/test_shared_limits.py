"""One run, one set of limits: plain checks and smoke-suite steps hitting the same target share
its per-host bound, and so do environments with different address policies."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from monitoring import services
from monitoring.lib import engine
from monitoring.lib.testing import TargetServer

from .support import allow, make_check


class Busy:
    """A slow route that counts the requests it is serving at once.

    The count drops before the answer is written, so a client that sees the answer and sends
    its next request at once can never make the count overshoot what the client had in flight.
    """

    def __init__(self, seconds: float = 0.2) -> None:
        self.seconds = seconds
        self.now = 0
        self.most = 0
        self.served = 0
        self.lock = threading.Lock()

    def __call__(self, handler: Any, query: dict[str, str]) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.seconds)
        with self.lock:
            self.now -= 1
            self.served += 1
        handler._send(200, b"busy but fine")


@pytest.fixture
def busy() -> Iterator[tuple[TargetServer, Busy]]:
    route = Busy()
    with TargetServer({"/busy": route}) as server:
        yield server, route


def suite(personas: Any, name: str, url: str, steps: int, environment: str = "staging") -> Any:
    return services.create_suite(
        personas.member,
        personas.membership(personas.member),
        environment=environment,
        name=name,
        steps=[
            {"name": f"step {i}", "url": url, "assertions": ["status == 200"]} for i in range(steps)
        ],
    )


def test_there_is_one_per_host_limit() -> None:
    assert services.PER_HOST_LIMIT is engine.PER_HOST_LIMIT
    assert services.MAX_CONNECTIONS is engine.MAX_CONNECTIONS


def test_suite_steps_and_checks_share_the_per_host_limit(personas, busy):
    server, route = busy
    allow(personas.staging)
    url = server.url("/busy")
    checks = [make_check(personas, url, name=f"check {i}") for i in range(8)]
    suites = [suite(personas, f"smoke {i}", url, steps=2) for i in range(8)]
    outcomes = services.run_units(
        services.load_checks([c.pk for c in (*checks, *suites)]), trigger="schedule"
    )
    assert all(o.passed for o in outcomes), [o.summary for o in outcomes if not o.passed]
    assert route.served == 8 + 8 * 2
    # Sixteen units wanted the target at once; the run let the engine's limit through, no more.
    assert route.most == engine.PER_HOST_LIMIT
    assert server.max_open_connections <= engine.PER_HOST_LIMIT


def test_environments_with_different_policies_share_a_hosts_limit(personas, busy):
    server, route = busy
    # Two allow-lists, so two address policies and two pooled clients, but one target.
    allow(personas.staging, "127.0.0.1")
    allow(personas.production, f"127.0.0.1:{server.port}")
    url = server.url("/busy")
    units = [make_check(personas, url, name=f"staging {i}") for i in range(6)]
    units += [
        make_check(personas, url, name=f"production {i}", environment=personas.production)
        for i in range(6)
    ]
    units += [suite(personas, "prod smoke", url, steps=3, environment="production")]
    outcomes = services.run_units(services.load_checks([u.pk for u in units]), trigger="schedule")
    assert all(o.passed for o in outcomes), [o.summary for o in outcomes if not o.passed]
    assert route.served == 12 + 3
    assert route.most == engine.PER_HOST_LIMIT
