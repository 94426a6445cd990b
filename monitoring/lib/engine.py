"""Run many HTTP health checks concurrently from one process.

A `CheckRunner` sends every check through one pooled, keep-alive, SSRF-guarded httpx client
(per address policy), so a run of thousands of checks against a handful of services reuses a
handful of connections instead of opening one per check; `run_checks(specs)` is a runner for one
group of checks. Three limits, shared by everything that runs through the same runner, keep one
bad target from hurting the rest:

* a semaphore per scheme://host:port caps how many checks hit one target at once, so a slow
  service does not take every pooled connection;
* the connection pools are per origin and as large as the per-host limit, and a global semaphore
  bounds the total, so a started check never waits for a pooled connection and its timeout
  measures the target, not a queue;
* `asyncio.timeout(spec.timeout_s)` wraps the whole exchange (resolve, connect, send, headers,
  body). httpx's own timeouts are per phase and per read, so a target that drips a byte every
  second would otherwise hold a check forever.

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
from typing import Any

import httpcore
import httpx

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
# environment and suite of a run. Past a few connections per target, httpcore's per-request
# bookkeeping costs more than the extra concurrency gains (bench: 1,391 checks/s at 4,
# 1,010/s at 8 on loopback targets), and a service under test should not feel a stampede.
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
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed: {exc}" if str(exc) else "connection failed"
    if isinstance(exc, httpx.TooManyRedirects):
        return f"too many redirects: {exc}"
    if isinstance(exc, httpx.HTTPError):
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
    across policies. Clients passed in are used and left open; clients made here are closed by
    `aclose` (or leaving `async with`).
    """

    def __init__(
        self,
        *,
        per_host_limit: int = PER_HOST_LIMIT,
        max_connections: int = MAX_CONNECTIONS,
        max_body_bytes: int = MAX_BODY_BYTES,
        excerpt_bytes: int = EXCERPT_BYTES,
        clients: Iterable[GuardedClient] = (),
        inner_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.per_host_limit = max(1, per_host_limit)
        self.global_slots = asyncio.Semaphore(max(1, max_connections))
        self.host_slots: dict[str, asyncio.Semaphore] = {}
        self.max_body_bytes = max_body_bytes
        self.excerpt_bytes = excerpt_bytes
        self.inner_backend = inner_backend
        self.clients: dict[AddressPolicy, httpx.AsyncClient] = {}
        for client in clients:
            if not isinstance(client, GuardedClient):
                raise TypeError(
                    "client must come from make_client() so the address policy is enforced"
                )
            self.clients[client.policy] = client
        self._owned: list[httpx.AsyncClient] = []
        # Pools are per origin (see ssrf._PoolPerOrigin) and as large as the per-host limit,
        # so a check that holds its host slot never waits for a pooled connection.
        self._limits = httpx.Limits(
            max_connections=self.per_host_limit, max_keepalive_connections=self.per_host_limit
        )

    def client_for(self, policy: AddressPolicy) -> httpx.AsyncClient:
        client = self.clients.get(policy)
        if client is None:
            client = make_client(policy, limits=self._limits, inner_backend=self.inner_backend)
            self.clients[policy] = client
            self._owned.append(client)
        return client

    async def aclose(self) -> None:
        owned, self._owned = self._owned, []
        for client in owned:
            self.clients.pop(client.policy, None)  # type: ignore[attr-defined]
            await client.aclose()

    async def __aenter__(self) -> CheckRunner:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _host_slot(self, url: httpx.URL) -> asyncio.Semaphore:
        key = f"{url.scheme}://{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
        slot = self.host_slots.get(key)
        if slot is None:
            slot = self.host_slots[key] = asyncio.Semaphore(self.per_host_limit)
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
            url = httpx.URL(spec.url)
            if url.scheme not in ("http", "https") or not url.host:
                raise httpx.InvalidURL("only http and https URLs with a host can be checked")
            if not spec.timeout_s > 0:
                raise ValueError(f"timeout_s must be positive, not {spec.timeout_s!r}")
        except AssertionSpecError as exc:
            return self._failed(spec, f"invalid assertion: {exc}", datetime.now(UTC))
        except (httpx.InvalidURL, TypeError) as exc:
            return self._failed(spec, f"invalid URL: {exc}", datetime.now(UTC))
        except ValueError as exc:
            return self._failed(spec, f"invalid check: {exc}", datetime.now(UTC))

        client = self.client_for(policy)
        async with self._host_slot(url), self.global_slots:
            started_at = datetime.now(UTC)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(spec.timeout_s):
                    async with client.stream(
                        spec.method.upper(),
                        url,
                        headers=dict(spec.headers),
                        content=spec.body,
                        timeout=spec.timeout_s,
                        follow_redirects=spec.follow_redirects,
                    ) as response:
                        body, truncated = await _read_capped(response, self.max_body_bytes)
            except Exception as exc:
                if not isinstance(exc, TimeoutError | httpx.HTTPError | SSRFBlocked):
                    logger.exception("health check %s failed unexpectedly", spec.id)
                result = self._failed(spec, _error_text(exc, spec), started_at)
                result.latency_ms = round((time.perf_counter() - started) * 1000, 3)
                return result
            latency_ms = round((time.perf_counter() - started) * 1000, 3)

        seen = Response(
            status_code=response.status_code,
            headers=response.headers,
            body=body,
            latency_ms=latency_ms,
            truncated=truncated,
        )
        failures = evaluate(assertions, seen, validated=True)
        return CheckResult(
            id=spec.id,
            passed=not failures,
            status_code=response.status_code,
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
    ) as runner:
        return await runner.run_many(specs, default_policy)


def run_checks_sync(specs: Iterable[CheckSpec], **options: Any) -> list[CheckResult]:
    """Blocking wrapper for Celery tasks and management commands (no running event loop)."""
    return asyncio.run(run_checks(specs, **options))
