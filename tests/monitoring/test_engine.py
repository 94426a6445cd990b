"""The check engine against target servers on 127.0.0.1 (nothing else is contacted).

Every test runs checks through the engine's one HTTP client, aiohttp behind the address guard
(the `checks` fixture).
"""

from __future__ import annotations

import functools
import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from monitoring.lib.engine import CheckResult, CheckSpec, run_checks, run_checks_sync
from monitoring.lib.ssrf import AddressPolicy
from monitoring.lib.testing import TargetServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


RunChecks = Callable[..., Awaitable[list[CheckResult]]]


@pytest.fixture
def checks() -> RunChecks:
    """run_checks as the workers call it."""
    return functools.partial(run_checks)


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


@pytest.fixture
def other_target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


def allowing(*servers: TargetServer) -> AddressPolicy:
    return AddressPolicy(allow=[f"127.0.0.1:{s.port}" for s in servers])


HEALTHY = [
    {"type": "status", "in": [200, 204]},
    {"type": "json", "path": "$.status", "op": "equals", "value": "ok"},
    {"type": "json", "path": "$.database", "op": "in", "value": ["connected"]},
    {"type": "json", "path": "$.items[0].name", "op": "exists"},
    {"type": "latency", "max_ms": 2000},
    {"type": "body_matches", "pattern": r'"database":\s*"connected"'},
    {"type": "header", "name": "x-service", "equals": "release-center"},
]


@pytest.mark.anyio
async def test_healthy_target_passes_every_assertion(
    target: TargetServer, checks: RunChecks
) -> None:
    before = datetime.now(UTC)
    [result] = await checks(
        [CheckSpec("api", "GET", target.url("/ok"), assertions=HEALTHY)], policy=allowing(target)
    )
    assert result.error is None
    assert result.failures == []
    assert result.passed
    assert result.status_code == 200
    assert result.latency_ms is not None and 0 < result.latency_ms < 2000
    assert json.loads(result.excerpt)["database"] == "connected"
    assert result.started_at.tzinfo is UTC
    assert before <= result.started_at <= datetime.now(UTC)
    assert target.paths() == ["/ok"]


@pytest.mark.anyio
async def test_unmet_assertions_fail_the_check_with_reasons(
    target: TargetServer, checks: RunChecks
) -> None:
    [result] = await checks(
        [
            CheckSpec(
                "api",
                "GET",
                target.url("/401"),
                assertions=[
                    {"type": "status", "equals": 200},
                    {"type": "json", "path": "$.status", "value": "ok"},
                    {"type": "header", "name": "X-Service", "exists": True},
                ],
            )
        ],
        policy=allowing(target),
    )
    assert not result.passed
    assert result.error is None
    assert result.status_code == 401
    assert [f.message for f in result.failures] == [
        "status 401, expected 200",
        "$.status: body is not JSON (Expecting value: line 1 column 1 (char 0))",
        "header X-Service is missing",
    ]
    assert result.excerpt == "status 401"


@pytest.mark.anyio
async def test_latency_assertion_fails_a_slow_target(
    target: TargetServer, checks: RunChecks
) -> None:
    [result] = await checks(
        [
            CheckSpec(
                "slow",
                "GET",
                target.url("/slow?ms=300"),
                assertions=[{"type": "latency", "max_ms": 100}],
            )
        ],
        policy=allowing(target),
    )
    assert not result.passed
    assert result.latency_ms is not None and result.latency_ms >= 300
    assert result.failures[0].expected == 100


@pytest.mark.anyio
async def test_hanging_target_does_not_delay_the_others(
    target: TargetServer,
    other_target: TargetServer,
    checks: RunChecks,
) -> None:
    fast = [
        CheckSpec(f"fast-{i}", "GET", target.url("/ok"), timeout_s=5, assertions=HEALTHY)
        for i in range(20)
    ]
    hanging = CheckSpec("hang", "GET", other_target.url("/hang"), timeout_s=0.5)
    started = time.perf_counter()
    results = await checks([hanging, *fast], policy=allowing(target, other_target))
    elapsed = time.perf_counter() - started

    hang, *quick = results
    assert [r.id for r in quick] == [f"fast-{i}" for i in range(20)]
    assert all(r.passed for r in quick), [r.error or r.failures for r in quick]
    assert not hang.passed
    assert hang.error == "timed out after 0.5 s"
    assert hang.latency_ms is not None and 450 <= hang.latency_ms < 1000
    # The fast checks finished well inside the hanging one's timeout, not after it.
    deadline = hang.started_at + timedelta(seconds=0.5)
    finished = [r.started_at + timedelta(milliseconds=r.latency_ms or 0) for r in quick]
    assert max(finished) < deadline - timedelta(milliseconds=200)
    assert elapsed < 1.2


@pytest.mark.anyio
async def test_timeout_covers_the_whole_exchange_not_each_read(
    target: TargetServer, checks: RunChecks
) -> None:
    # The target answers at once and then sends a byte every 0.1 s for 5 s: no single read is
    # slow, so only a deadline on the whole check stops it.
    started = time.perf_counter()
    [result] = await checks(
        [CheckSpec("drip", "GET", target.url("/drip?n=50&interval=0.1"), timeout_s=0.5)],
        policy=allowing(target),
    )
    assert result.error == "timed out after 0.5 s"
    assert time.perf_counter() - started < 1.2


@pytest.mark.anyio
async def test_per_host_limit_bounds_concurrent_requests_to_one_target(
    target: TargetServer,
    checks: RunChecks,
) -> None:
    specs = [CheckSpec(i, "GET", target.url("/slow?ms=150")) for i in range(12)]
    started = time.perf_counter()
    results = await checks(specs, policy=allowing(target), per_host_limit=3)
    assert all(r.passed for r in results)
    assert target.max_in_flight == 3
    assert time.perf_counter() - started >= 4 * 0.15 * 0.9


@pytest.mark.anyio
async def test_checks_reuse_keep_alive_connections(target: TargetServer, checks: RunChecks) -> None:
    specs = [CheckSpec(i, "GET", target.url("/ok")) for i in range(40)]
    results = await checks(specs, policy=allowing(target), per_host_limit=2)
    assert all(r.passed for r in results)
    assert len(target.requests) == 40
    assert len(target.connections()) <= 2


@pytest.mark.anyio
async def test_policy_refusal_is_a_failed_result_and_nothing_is_sent(
    target: TargetServer,
    checks: RunChecks,
) -> None:
    [result] = await checks([CheckSpec("local", "GET", target.url("/ok"))])
    assert not result.passed
    assert result.status_code is None
    assert result.error is not None
    assert result.error.startswith("blocked by address policy (loopback): 127.0.0.1:")
    assert target.requests == []


@pytest.mark.anyio
async def test_redirect_to_a_port_outside_the_policy_fails_the_check(
    target: TargetServer,
    other_target: TargetServer,
    checks: RunChecks,
) -> None:
    url = target.url(f"/redirect?to={other_target.url('/ok')}")
    [followed, not_followed] = await checks(
        [
            CheckSpec("follow", "GET", url, follow_redirects=True),
            CheckSpec("plain", "GET", url, assertions=[{"type": "status", "equals": 302}]),
        ],
        policy=allowing(target),
    )
    assert followed.error is not None and "(loopback)" in followed.error
    assert not_followed.passed
    assert other_target.requests == []


@pytest.mark.anyio
async def test_each_policy_gets_its_own_pool(target: TargetServer, checks: RunChecks) -> None:
    # The lenient check opens a keep-alive connection to the target; the strict one must not
    # ride on it.
    results = await checks(
        [
            CheckSpec("lenient", "GET", target.url("/ok"), policy=allowing(target)),
            CheckSpec("strict", "GET", target.url("/ok"), policy=AddressPolicy()),
        ]
    )
    assert [r.passed for r in results] == [True, False]
    assert target.paths() == ["/ok"]


@pytest.mark.anyio
async def test_refused_connection_is_a_clear_error(
    checks: RunChecks,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    [result] = await checks(
        [CheckSpec("down", "GET", f"http://127.0.0.1:{port}/health", timeout_s=2)],
        policy=AddressPolicy(allow=[f"127.0.0.1:{port}"]),
    )
    assert not result.passed
    assert result.error is not None and result.error.startswith("connection failed")


@pytest.mark.anyio
async def test_bad_specs_fail_without_sending(target: TargetServer, checks: RunChecks) -> None:
    results = await checks(
        [
            CheckSpec("bad-assertion", "GET", target.url("/ok"), assertions=[{"type": "nope"}]),
            CheckSpec("bad-url", "GET", "ftp://127.0.0.1/file"),
            CheckSpec("no-host", "GET", "http:///ok"),
            CheckSpec("no-time", "GET", target.url("/ok"), timeout_s=0),
        ],
        policy=allowing(target),
    )
    assert [r.passed for r in results] == [False, False, False, False]
    assert results[3].error == "invalid check: timeout_s must be positive, not 0"
    assert results[0].error is not None and results[0].error.startswith("invalid assertion:")
    assert results[1].error is not None and results[1].error.startswith("invalid URL:")
    assert results[2].error is not None and results[2].error.startswith("invalid URL:")
    assert target.requests == []


@pytest.mark.anyio
async def test_large_body_is_capped_for_assertions_and_excerpt(
    target: TargetServer, checks: RunChecks
) -> None:
    [result, capped] = await checks(
        [
            CheckSpec(
                "big",
                "GET",
                target.url("/big?kb=100"),
                assertions=[{"type": "body_matches", "pattern": "^BEGINx+$"}],
            ),
            CheckSpec(
                "capped",
                "GET",
                target.url("/big?kb=100"),
                assertions=[{"type": "json", "path": "$.a", "op": "exists"}],
            ),
        ],
        policy=allowing(target),
        max_body_bytes=10 * 1024,
    )
    assert result.passed
    assert result.excerpt.startswith("BEGIN")
    assert len(result.excerpt.encode()) == 2048
    assert "size limit" in capped.failures[0].message


@pytest.mark.anyio
async def test_method_headers_and_body_are_sent(target: TargetServer, checks: RunChecks) -> None:
    [result] = await checks(
        [
            CheckSpec(
                "post",
                "POST",
                target.url("/echo"),
                headers={"X-Probe": "release-center"},
                body='{"ping": 1}',
                assertions=[{"type": "json", "path": "$.method", "value": "POST"}],
            )
        ],
        policy=allowing(target),
    )
    assert result.passed
    [request] = target.requests
    assert request.headers["X-Probe"] == "release-center"
    assert request.body == b'{"ping": 1}'


def test_run_checks_sync_for_celery_tasks(target: TargetServer) -> None:
    results = run_checks_sync(
        [CheckSpec("sync", "GET", target.url("/ok"), assertions=HEALTHY)],
        policy=allowing(target),
    )
    assert results[0].passed
    data = results[0].to_dict()
    assert json.loads(json.dumps(data))["id"] == "sync"
    assert data["started_at"].endswith("+00:00")
