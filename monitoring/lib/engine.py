"""Run many HTTP health checks concurrently from one process.

A `CheckRunner` sends every check through one pooled, keep-alive, SSRF-guarded client per
address policy, so a run of thousands of checks against a handful of services reuses a handful
of connections instead of opening one per check; `run_checks(specs)` is a runner for one group
of checks. The client is `monitoring.lib.http1`, a small HTTP/1.1 client on asyncio protocols
(the engine runs 6-10 times as many checks per second through it as through httpx; see its
docstring); `http_client="httpx"` runs the same checks through httpx and `make_client`
instead, and so does a policy whose httpx client is passed in. Three limits, shared by
everything that runs through the same runner, keep one bad target from hurting the rest:

* a semaphore per scheme://host:port caps how many checks hit one target at once, so a slow
  service does not take every pooled connection;
* the connection pools are per origin and as large as the per-host limit, and a global semaphore
  bounds the total, so a started check never waits for a pooled connection and its timeout
  measures the target, not a queue;
* `asyncio.timeout(spec.timeout_s)` wraps the whole exchange (resolve, connect, send, headers,
  body, redirects). httpx's own timeouts are per phase and per read, so a target that drips a
  byte every second would otherwise hold a check forever.

Queued checks do not start their clock until they get their slot; a check's latency and
`started_at` are for the request itself. Every failure (timeout, refused connection, policy
refusal, bad assertion spec) becomes a failed `CheckResult` with an error string; nothing a
target does raises out of `run_checks`.

Celery tasks call `run_checks_sync`, which owns its event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpcore
import httpx

from monitoring.lib import http1
from monitoring.lib.assertions import (
    AssertionSpecError,
    Failure,
    Response,
    evaluate,
    validate_assertions,
)
from monitoring.lib.ssrf import AddressPolicy, GuardedClient, SSRFBlocked, make_client

logger = logging.getLogger(__name__)

EXCERPT_BYTES = 2048
MAX_BODY_BYTES = 1024 * 1024
# How many checks may be in flight to one target (scheme, host, port) at once, across every
# environment and suite of a run. A service under test should not feel a stampede, and past a
# few connections per target the extra concurrency gains nothing on a loopback target (and,
# with httpx, httpcore's per-request bookkeeping costs more than it gains: bench 1,391
# checks/s at 4, 1,010/s at 8).
PER_HOST_LIMIT = 4
# How many checks one runner has in flight in total.
MAX_CONNECTIONS = 100


@dataclass(slots=True)
class CheckSpec:
    id: Any
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | str | None = None
    timeout_s: float = 10.0
    assertions: Sequence[Mapping[str, Any]] = ()
    policy: AddressPolicy | None = None
    follow_redirects: bool = False


@dataclass(slots=True)
class CheckResult:
    id: Any
    passed: bool
    status_code: int | None
    latency_ms: float | None
    failures: list[Failure]
    error: str | None
    excerpt: str
    started_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, for Celery results and storage."""
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        return data


def _error_text(exc: BaseException, spec: CheckSpec) -> str:
    if isinstance(exc, SSRFBlocked):
        return f"blocked by address policy ({exc.decision.rule}): {exc.decision.message}"
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f"timed out after {spec.timeout_s:g} s"
    if isinstance(exc, httpx.ConnectError | http1.ConnectError):
        return f"connection failed: {exc}" if str(exc) else "connection failed"
    if isinstance(exc, httpx.TooManyRedirects | http1.TooManyRedirects):
        return f"too many redirects: {exc}"
    if isinstance(exc, httpx.HTTPError | http1.HTTPError):
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"unexpected error: {type(exc).__name__}: {exc}"


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            # Leaving the stream early closes the connection instead of returning it to the
            # pool, which is the right price for a response this large.
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


def _excerpt(body: bytes, limit: int) -> str:
    # Cutting bytes can split a UTF-8 sequence; "replace" turns the stray tail into one U+FFFD.
    return body[:limit].decode("utf-8", errors="replace")


class CheckRunner:
    """The limits and pooled clients shared by everything one worker runs together.

    One runner per batch: plain checks and suite steps alike take a slot per target host and a
    global slot from it, so a suite cannot get around the bound that the plain checks of the
    same batch respect, and two environments probing one host share that host's limit. Each
    address policy still gets a client of its own (a keep-alive connection opened under a
    lenient policy must never serve a check under a stricter one), but the slots are per host,
    across policies. Clients passed in (httpx ones, from `make_client`) serve their policy's
    checks and are left open; clients made here are closed by `aclose` (or leaving
    `async with`).

    `http_client`: "http1" (the default, `monitoring.lib.http1`) or "httpx". `inner_backend` is
    for tests: the socket layer under the guard, an httpcore network backend for httpx that,
    for http1, also has an http1 `Dialer`'s `dial` (monitoring.lib.testing.SpyBackend has both).
    """

    def __init__(
        self,
        *,
        per_host_limit: int = PER_HOST_LIMIT,
        max_connections: int = MAX_CONNECTIONS,
        max_body_bytes: int = MAX_BODY_BYTES,
        excerpt_bytes: int = EXCERPT_BYTES,
        clients: Iterable[GuardedClient] = (),
        http_client: Literal["http1", "httpx"] = "http1",
        inner_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        if http_client not in ("http1", "httpx"):
            raise ValueError(f"http_client is 'http1' or 'httpx', not {http_client!r}")
        self.per_host_limit = max(1, per_host_limit)
        self.global_slots = asyncio.Semaphore(max(1, max_connections))
        self.host_slots: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self.max_body_bytes = max_body_bytes
        self.excerpt_bytes = excerpt_bytes
        self.http_client = http_client
        self.inner_backend = inner_backend
        if (
            http_client == "http1"
            and inner_backend is not None
            and not hasattr(inner_backend, "dial")
        ):
            raise TypeError("inner_backend needs a dial() for http1 (see testing.SpyBackend)")
        self.clients: dict[AddressPolicy, httpx.AsyncClient] = {}
        for client in clients:
            if not isinstance(client, GuardedClient):
                raise TypeError(
                    "client must come from make_client() so the address policy is enforced"
                )
            self.clients[client.policy] = client
        self.http1_clients: dict[AddressPolicy, http1.Http1Client] = {}
        self._owned: list[httpx.AsyncClient] = []
        # Pools are per origin (see ssrf._PoolPerOrigin) and as large as the per-host limit,
        # so a check that holds its host slot never waits for a pooled connection.
        self._limits = httpx.Limits(
            max_connections=self.per_host_limit, max_keepalive_connections=self.per_host_limit
        )

    def client_for(self, policy: AddressPolicy) -> httpx.AsyncClient:
        """The httpx client of a policy (made on first use)."""
        client = self.clients.get(policy)
        if client is None:
            client = make_client(policy, limits=self._limits, inner_backend=self.inner_backend)
            self.clients[policy] = client
            self._owned.append(client)
        return client

    def http1_client_for(self, policy: AddressPolicy) -> http1.Http1Client:
        """The http1 client of a policy (made on first use); its idle pool per origin is as
        large as the per-host limit, which already bounds how many checks use it at once."""
        client = self.http1_clients.get(policy)
        if client is None:
            client = http1.Http1Client(
                policy,
                max_idle_per_origin=self.per_host_limit,
                dialer=self.inner_backend,  # type: ignore[arg-type]
            )
            self.http1_clients[policy] = client
        return client

    async def aclose(self) -> None:
        owned, self._owned = self._owned, []
        for client in owned:
            self.clients.pop(client.policy, None)  # type: ignore[attr-defined]
            await client.aclose()
        fast, self.http1_clients = list(self.http1_clients.values()), {}
        for fast_client in fast:
            await fast_client.aclose()

    async def __aenter__(self) -> CheckRunner:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _host_slot(self, origin: tuple[str, str, int]) -> asyncio.Semaphore:
        slot = self.host_slots.get(origin)
        if slot is None:
            slot = self.host_slots[origin] = asyncio.Semaphore(self.per_host_limit)
        return slot

    def _failed(self, spec: CheckSpec, error: str, started_at: datetime) -> CheckResult:
        return CheckResult(spec.id, False, None, None, [], error, "", started_at)

    async def run_many(
        self, specs: Iterable[CheckSpec], policy: AddressPolicy | None = None
    ) -> list[CheckResult]:
        """Run checks concurrently under this runner's limits; results in the order given."""
        return list(await asyncio.gather(*(self.run(spec, policy) for spec in specs)))

    async def run(self, spec: CheckSpec, policy: AddressPolicy | None = None) -> CheckResult:
        """Run one check. Its policy: `spec.policy`, else `policy`, else public addresses only."""
        policy = spec.policy or policy or AddressPolicy()
        try:
            assertions = validate_assertions(spec.assertions)
            target = http1.parse_url(spec.url)
            if not spec.timeout_s > 0:
                raise ValueError(f"timeout_s must be positive, not {spec.timeout_s!r}")
        except AssertionSpecError as exc:
            return self._failed(spec, f"invalid assertion: {exc}", datetime.now(UTC))
        except (httpx.InvalidURL, http1.InvalidRequest, TypeError) as exc:
            return self._failed(spec, f"invalid URL: {exc}", datetime.now(UTC))
        except ValueError as exc:
            return self._failed(spec, f"invalid check: {exc}", datetime.now(UTC))

        httpx_client = self.clients.get(policy)
        if httpx_client is None and self.http_client == "httpx":
            httpx_client = self.client_for(policy)
        fast = self.http1_client_for(policy) if httpx_client is None else None
        async with self._host_slot(target.origin), self.global_slots:
            started_at = datetime.now(UTC)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(spec.timeout_s):
                    if fast is not None:
                        reply = await fast.request(
                            spec.method,
                            target,
                            headers=spec.headers,
                            body=spec.body,
                            follow_redirects=spec.follow_redirects,
                            max_body=self.max_body_bytes,
                        )
                        status, headers = reply.status_code, reply.headers
                        body, truncated = reply.body, reply.truncated
                    else:
                        assert httpx_client is not None
                        async with httpx_client.stream(
                            spec.method.upper(),
                            target.url,
                            headers=dict(spec.headers),
                            content=spec.body,
                            timeout=spec.timeout_s,
                            follow_redirects=spec.follow_redirects,
                        ) as response:
                            body, truncated = await _read_capped(response, self.max_body_bytes)
                        status, headers = response.status_code, response.headers
            except Exception as exc:
                if not isinstance(
                    exc, TimeoutError | httpx.HTTPError | http1.HTTPError | SSRFBlocked
                ):
                    logger.exception("health check %s failed unexpectedly", spec.id)
                result = self._failed(spec, _error_text(exc, spec), started_at)
                result.latency_ms = round((time.perf_counter() - started) * 1000, 3)
                return result
            latency_ms = round((time.perf_counter() - started) * 1000, 3)

        seen = Response(
            status_code=status,
            headers=headers,
            body=body,
            latency_ms=latency_ms,
            truncated=truncated,
        )
        failures = evaluate(assertions, seen, validated=True)
        return CheckResult(
            id=spec.id,
            passed=not failures,
            status_code=status,
            latency_ms=latency_ms,
            failures=failures,
            error=None,
            excerpt=_excerpt(body, self.excerpt_bytes),
            started_at=started_at,
        )


async def run_checks(
    specs: Iterable[CheckSpec],
    *,
    client: GuardedClient | None = None,
    policy: AddressPolicy | None = None,
    per_host_limit: int = PER_HOST_LIMIT,
    max_connections: int = MAX_CONNECTIONS,
    max_body_bytes: int = MAX_BODY_BYTES,
    excerpt_bytes: int = EXCERPT_BYTES,
    http_client: Literal["http1", "httpx"] = "http1",
) -> list[CheckResult]:
    """Run checks concurrently with a runner of their own; results in the order of `specs`.

    A spec without a policy uses `policy`, else the client's, else the default AddressPolicy
    (public addresses only). Each policy gets one pooled client; a `client` passed in (from
    `make_client`) serves its own policy's checks and is left open. Code that runs several
    groups of checks together (a batch with suites) shares one `CheckRunner` instead, so the
    limits hold across all of them.
    """
    if client is not None and not isinstance(client, GuardedClient):
        raise TypeError("client must come from make_client() so the address policy is enforced")
    default_policy = policy or (client.policy if client is not None else None) or AddressPolicy()
    async with CheckRunner(
        per_host_limit=per_host_limit,
        max_connections=max_connections,
        max_body_bytes=max_body_bytes,
        excerpt_bytes=excerpt_bytes,
        clients=[client] if client is not None else (),
        http_client=http_client,
    ) as runner:
        return await runner.run_many(specs, default_policy)


def run_checks_sync(specs: Iterable[CheckSpec], **options: Any) -> list[CheckResult]:
    """Blocking wrapper for Celery tasks and management commands (no running event loop)."""
    return asyncio.run(run_checks(specs, **options))
