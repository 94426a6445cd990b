"""Run many health checks concurrently from one process, on aiohttp.

A `CheckRunner` sends every HTTP check through one pooled, keep-alive, SSRF-guarded aiohttp
session per address policy (and client certificate), so a run of thousands of checks against a
handful of services reuses a handful of connections instead of opening one per check;
`run_checks(specs)` is a runner for one group of checks. aiohttp parses responses with llhttp
and takes the address guard as its resolver (`ssrf.GuardedResolver`): every new connection
resolves, judges every address and connects to a judged one. Redirects are followed here, hop
by hop, so each hop's IP literal is judged too (`ssrf.judge_literal`) before anything is sent.

Probe kinds (see `CheckSpec.probe`): "http" (the default) and "tcp" (`tcp://host:port`: connect
through the same guard, optionally send a line and expect a reply matching a regex). Heartbeat
checks are pushed to us and never run here.

Three limits, shared by everything that runs through the same runner, keep one bad target from
hurting the rest:

* a semaphore per scheme://host:port caps how many checks hit one target at once, so a slow
  service does not take every pooled connection;
* the connector's pools are per origin and as large as the per-host limit, and a global
  semaphore bounds the total, so a started check never waits for a pooled connection and its
  timeout measures the target, not a queue;
* `asyncio.timeout(spec.timeout_s)` wraps the whole exchange (resolve, connect, send, headers,
  body, redirects), so a target that drips a byte every second cannot hold a check.

Bodies are read up to a cap; a compressed body (the engine asks for gzip and deflate) is
decompressed as it streams in, and the cap applies to the decompressed bytes, so a small
"zip bomb" costs no more than the cap. On HTTPS the served certificate's expiry, issuer and
names and the negotiated TLS version are recorded on the result (`TLSInfo`) for the
`certificate_days_left` and `tls_version` assertions and the Health page.

Queued checks do not start their clock until they get their slot; a check's latency and
`started_at` are for the request itself. Every failure (timeout, refused connection, policy
refusal, bad assertion spec) becomes a failed `CheckResult` with an error string; nothing a
target does raises out of `run_checks`.

To add a probe kind: give `CheckRunner` an `_<kind>(spec, policy)` coroutine returning a
`Response` (what assertions see) and route to it in `CheckRunner._exchange`.

Celery tasks call `run_checks_sync`, which owns its event loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

import aiohttp
import certifi
from cryptography import x509
from cryptography.x509.oid import NameOID
from yarl import URL

from monitoring.lib.assertions import (
    AssertionSpecError,
    Failure,
    Response,
    TLSInfo,
    evaluate,
    validate_assertions,
)
from monitoring.lib.ssrf import (
    AddressPolicy,
    GuardedResolver,
    SSRFBlocked,
    judge_literal,
    resolve_checked,
)

logger = logging.getLogger(__name__)

EXCERPT_BYTES = 2048
MAX_BODY_BYTES = 1024 * 1024
# How many checks may be in flight to one target (scheme, host, port) at once, across every
# environment and suite of a run. A service under test should not feel a stampede, and past a
# few connections per target the extra concurrency gains nothing on a loopback target.
PER_HOST_LIMIT = 4
# How many checks one runner has in flight in total.
MAX_CONNECTIONS = 100
MAX_REDIRECTS = 5
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "ReleaseCenter-HealthCheck/1"
# A TCP probe reads at most this much while waiting for its expected reply.
TCP_READ_LIMIT = 64 * 1024
PROBES = ("http", "tcp")


class SocketFactory(Protocol):
    """The socket layer under the guard, for tests (monitoring.lib.testing.SpyBackend)."""

    def socket_factory(self, addr_info: Any) -> socket.socket: ...


class TooManyRedirects(Exception):
    pass


class InvalidTarget(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A client certificate and its private key (PEM), for targets that require mTLS."""

    cert_pem: str
    key_pem: str


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
    # "http" or "tcp"; a TCP probe sends `body` (a line) when given and waits for `expect`.
    probe: str = "http"
    expect: str | None = None
    # An HTTP proxy every request of this check goes through (an environment admin's choice).
    proxy: str | None = None
    client_certificate: ClientCertificate | None = None


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
    tls: TLSInfo | None = None
    http_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, for Celery results and storage."""
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        if self.tls is not None:
            data["tls"] = self.tls.to_dict()
        return data


def _error_text(exc: BaseException, spec: CheckSpec) -> str:
    if isinstance(exc, SSRFBlocked):
        return f"blocked by address policy ({exc.decision.rule}): {exc.decision.message}"
    if isinstance(exc, TimeoutError):
        return f"timed out after {spec.timeout_s:g} s"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate not accepted: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return f"proxy connection failed: {exc.os_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection failed: {exc.os_error}"
    if isinstance(exc, OSError):
        return f"connection failed: {exc}" if str(exc) else "connection failed"
    if isinstance(exc, TooManyRedirects):
        return f"too many redirects: {exc}"
    if isinstance(exc, aiohttp.ClientResponseError) and exc.status == 407:
        return "proxy refused the request: 407 Proxy Authentication Required"
    if isinstance(exc, aiohttp.ClientError | InvalidTarget):
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"unexpected error: {type(exc).__name__}: {exc}"


def _excerpt(body: bytes, limit: int) -> str:
    # Cutting bytes can split a UTF-8 sequence; "replace" turns the stray tail into one U+FFFD.
    return body[:limit].decode("utf-8", errors="replace")


async def _read_capped(content: aiohttp.StreamReader, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes of a (decompressed) body, and whether there was more."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await content.read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    # Leaving the response with the body unread closes the connection instead of returning it
    # to the pool, which is the right price for a response this large.
    return b"".join(chunks)[:limit], True


@lru_cache(maxsize=256)
def certificate_info(der: bytes, version: str) -> TLSInfo:
    """Expiry, issuer and names of a DER certificate (cached: a pooled connection serves many
    checks with the same certificate)."""
    cert = x509.load_der_x509_certificate(der)
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [*san.get_values_for_type(x509.DNSName)]
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    if not names:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    issuer = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return TLSInfo(
        not_after=cert.not_valid_after_utc,
        issuer=str(issuer[0].value) if issuer else cert.issuer.rfc4514_string(),
        names=tuple(names),
        version=version,
    )


class _CheckResponse(aiohttp.ClientResponse):
    """A response that notes the TLS certificate and version of the connection it came on.

    aiohttp hands a small answer's connection back to the pool before the caller sees the
    response, so `response.connection` is already gone by then; `start(connection)` (given as
    the session's `response_class`) is where the connection is still ours.
    """

    tls: TLSInfo | None = None

    async def start(self, connection: Any) -> aiohttp.ClientResponse:
        transport = connection.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)
            if der:
                self.tls = certificate_info(der, ssl_object.version() or "")
        return await super().start(connection)


@lru_cache(maxsize=64)
def _ssl_context(trust: str | None, client_certificate: ClientCertificate | None) -> ssl.SSLContext:
    """certifi's roots (plus `trust`) and the client certificate, built once per process per
    combination: loading the CA bundle costs ~30 ms, and a worker makes sessions per batch."""
    context = ssl.create_default_context(cafile=certifi.where())
    if trust:
        context.load_verify_locations(cadata=trust)
    if client_certificate is not None:
        # load_cert_chain reads files only; the files live for this call alone, mode 0600.
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as pem:
            pem.write(client_certificate.cert_pem.strip() + "\n")
            pem.write(client_certificate.key_pem.strip() + "\n")
            pem.flush()
            context.load_cert_chain(pem.name)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _origin(url: URL) -> tuple[str, str, int]:
    return (url.scheme, url.raw_host or "", url.port or 0)


def parse_target(spec: CheckSpec) -> URL:
    """The URL a check requests (http/https, or tcp://host:port for a TCP probe)."""
    if not isinstance(spec.url, str):
        raise InvalidTarget(f"a URL is text, not {type(spec.url).__name__}")
    try:
        url = URL(spec.url)
    except (ValueError, TypeError) as exc:
        raise InvalidTarget(str(exc)) from None
    expected = ("tcp",) if spec.probe == "tcp" else ("http", "https")
    if url.scheme not in expected or not url.raw_host:
        raise InvalidTarget(
            f"only {' and '.join(expected)} URLs with a host can be requested: {spec.url}"
        )
    if spec.probe == "tcp" and url.port is None:
        raise InvalidTarget(f"a TCP probe names its port (tcp://host:port): {spec.url}")
    return url


class CheckRunner:
    """The limits and pooled sessions shared by everything one worker runs together.

    One runner per batch: plain checks and suite steps alike take a slot per target host and a
    global slot from it, so a suite cannot get around the bound that the plain checks of the
    same batch respect, and two environments probing one host share that host's limit. Each
    address policy (and client certificate) gets a session of its own, because a keep-alive
    connection opened under a lenient policy must never serve a check under a stricter one; the
    slots are per host, across policies. Sessions are closed by `aclose` (or leaving
    `async with`).

    `trust`: extra CA certificates (PEM) to trust besides certifi's roots. `inner_backend` is
    for tests: the socket layer under the guard (see `SocketFactory`).
    """

    def __init__(
        self,
        *,
        per_host_limit: int = PER_HOST_LIMIT,
        max_connections: int = MAX_CONNECTIONS,
        max_body_bytes: int = MAX_BODY_BYTES,
        excerpt_bytes: int = EXCERPT_BYTES,
        trust: str | None = None,
        inner_backend: SocketFactory | None = None,
    ) -> None:
        if inner_backend is not None and not hasattr(inner_backend, "socket_factory"):
            raise TypeError("inner_backend needs a socket_factory() (see testing.SpyBackend)")
        self.per_host_limit = max(1, per_host_limit)
        self.max_connections = max(1, max_connections)
        self.global_slots = asyncio.Semaphore(self.max_connections)
        self.host_slots: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self.max_body_bytes = max_body_bytes
        self.excerpt_bytes = excerpt_bytes
        self.trust = trust
        self.inner_backend = inner_backend
        self.sessions: dict[tuple[AddressPolicy, ClientCertificate | None], Any] = {}
        # IP-literal hosts a policy allowed: a literal's verdict cannot change, and judging one
        # costs more than the rest of a pooled request's bookkeeping.
        self._allowed_literals: set[tuple[AddressPolicy, str, int]] = set()

    def session_for(
        self, policy: AddressPolicy, client_certificate: ClientCertificate | None = None
    ) -> aiohttp.ClientSession:
        """The session of a policy and client certificate (made on first use)."""
        key = (policy, client_certificate)
        session = self.sessions.get(key)
        if session is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(policy),
                # Every new connection asks the guard; pooled ones were judged when opened.
                use_dns_cache=False,
                limit=self.max_connections,
                limit_per_host=self.per_host_limit,
                ssl=_ssl_context(self.trust, client_certificate),
                socket_factory=(
                    self.inner_backend.socket_factory if self.inner_backend is not None else None
                ),
            )
            session = aiohttp.ClientSession(
                connector=connector,
                # Checks are independent: a cookie set for one must never ride on another.
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"User-Agent": USER_AGENT, "Accept": "*/*"},
                auto_decompress=True,
                response_class=_CheckResponse,
            )
            self.sessions[key] = session
        return session

    async def aclose(self) -> None:
        sessions, self.sessions = list(self.sessions.values()), {}
        for session in sessions:
            await session.close()

    async def __aenter__(self) -> CheckRunner:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _host_slot(self, origin: tuple[str, str, int]) -> asyncio.Semaphore:
        slot = self.host_slots.get(origin)
        if slot is None:
            slot = self.host_slots[origin] = asyncio.Semaphore(self.per_host_limit)
        return slot

    def _judge_literal(self, policy: AddressPolicy, url: URL) -> None:
        key = (policy, url.raw_host or "", url.port or 0)
        if key not in self._allowed_literals:
            judge_literal(policy, key[1], key[2])
            self._allowed_literals.add(key)

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
            if spec.probe not in PROBES:
                raise ValueError(f"probe is one of {', '.join(PROBES)}, not {spec.probe!r}")
            assertions = validate_assertions(spec.assertions)
            target = parse_target(spec)
            if not spec.timeout_s > 0:
                raise ValueError(f"timeout_s must be positive, not {spec.timeout_s!r}")
            expect = re.compile(spec.expect) if spec.expect else None
        except AssertionSpecError as exc:
            return self._failed(spec, f"invalid assertion: {exc}", datetime.now(UTC))
        except InvalidTarget as exc:
            return self._failed(spec, f"invalid URL: {exc}", datetime.now(UTC))
        except (ValueError, re.error) as exc:
            return self._failed(spec, f"invalid check: {exc}", datetime.now(UTC))

        async with self._host_slot(_origin(target)), self.global_slots:
            started_at = datetime.now(UTC)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(spec.timeout_s):
                    if spec.probe == "tcp":
                        seen = await self._tcp(spec, target, policy, expect, started)
                    else:
                        seen = await self._http(spec, target, policy, started)
            except Exception as exc:
                if not isinstance(
                    exc, TimeoutError | aiohttp.ClientError | OSError | SSRFBlocked
                ) and not isinstance(exc, TooManyRedirects | InvalidTarget):
                    logger.exception("health check %s failed unexpectedly", spec.id)
                result = self._failed(spec, _error_text(exc, spec), started_at)
                result.latency_ms = round((time.perf_counter() - started) * 1000, 3)
                return result

        failures = evaluate(assertions, seen, validated=True)
        if expect is not None and not expect.search(_excerpt(seen.body, TCP_READ_LIMIT)):
            failures.insert(
                0,
                Failure(
                    {"type": "expect", "pattern": expect.pattern},
                    expect.pattern,
                    _excerpt(seen.body, 200),
                    f"the reply did not match {expect.pattern!r}",
                ),
            )
        return CheckResult(
            id=spec.id,
            passed=not failures,
            status_code=seen.status_code or None,
            latency_ms=seen.latency_ms,
            failures=failures,
            error=None,
            excerpt=_excerpt(seen.body, self.excerpt_bytes),
            started_at=started_at,
            tls=seen.tls,
            http_version=seen.http_version,
        )

    async def _http(
        self, spec: CheckSpec, url: URL, policy: AddressPolicy, started: float
    ) -> Response:
        session = self.session_for(policy, spec.client_certificate)
        method = spec.method.upper()
        body = spec.body.encode() if isinstance(spec.body, str) else spec.body
        headers = dict(spec.headers)
        proxy = URL(spec.proxy) if spec.proxy else None
        for hop in range(MAX_REDIRECTS + 1):
            # aiohttp connects to IP literals without asking the resolver: judge them here,
            # every hop, before anything is sent. Names are judged by the resolver at connect.
            self._judge_literal(policy, url)
            if proxy is not None:
                self._judge_literal(policy, proxy)
            async with session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                proxy=proxy,
            ) as response:
                location = response.headers.get("Location")
                if (
                    spec.follow_redirects
                    and response.status in REDIRECT_CODES
                    and location
                    and hop < MAX_REDIRECTS
                ):
                    following = url.join(URL(location))
                    if following.scheme not in ("http", "https") or not following.raw_host:
                        raise InvalidTarget(f"invalid redirect location {location!r}")
                    # Browsers' rules: 303, and 301/302 after a POST, become a GET without a
                    # body; 307 and 308 repeat the request as it was.
                    if (response.status == 303 and method != "HEAD") or (
                        response.status in (301, 302) and method == "POST"
                    ):
                        method, body = "GET", None
                        headers = {
                            k: v
                            for k, v in headers.items()
                            if k.lower() not in ("content-length", "content-type")
                        }
                    if _origin(following) != _origin(url):
                        # Credentials are for the origin they were written for.
                        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                    url = following
                    continue
                if spec.follow_redirects and response.status in REDIRECT_CODES and location:
                    raise TooManyRedirects(f"more than {MAX_REDIRECTS} redirects, last to {url}")
                tls = getattr(response, "tls", None)
                content, truncated = await _read_capped(response.content, self.max_body_bytes)
                latency_ms = round((time.perf_counter() - started) * 1000, 3)
                return Response(
                    status_code=response.status,
                    headers=response.headers,
                    body=content,
                    latency_ms=latency_ms,
                    truncated=truncated,
                    tls=tls,
                    http_version=f"{response.version.major}.{response.version.minor}",
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _tcp(
        self,
        spec: CheckSpec,
        url: URL,
        policy: AddressPolicy,
        expect: re.Pattern[str] | None,
        started: float,
    ) -> Response:
        host, port = url.raw_host or "", url.port or 0
        addresses = await resolve_checked(policy, host, port)
        writer: asyncio.StreamWriter | None = None
        last_error: OSError | None = None
        loop = asyncio.get_running_loop()
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            try:
                if self.inner_backend is not None:
                    sock = self.inner_backend.socket_factory(
                        (family, socket.SOCK_STREAM, 0, "", (address, port))
                    )
                    sock.setblocking(False)
                    try:
                        await loop.sock_connect(sock, (address, port))
                    except BaseException:
                        sock.close()
                        raise
                    reader, writer = await asyncio.open_connection(sock=sock)
                else:
                    reader, writer = await asyncio.open_connection(address, port)
                break
            except OSError as exc:
                last_error = exc
        if writer is None:
            assert last_error is not None
            raise last_error
        connected_ms = round((time.perf_counter() - started) * 1000, 3)
        received = b""
        try:
            if spec.body:
                line = spec.body.encode() if isinstance(spec.body, str) else spec.body
                writer.write(line if line.endswith(b"\n") else line + b"\n")
                await writer.drain()
            if expect is not None:
                while len(received) < TCP_READ_LIMIT:
                    chunk = await reader.read(TCP_READ_LIMIT - len(received))
                    if not chunk:
                        break
                    received += chunk
                    if expect.search(received.decode("utf-8", errors="replace")):
                        break
        finally:
            writer.close()
        latency_ms = (
            round((time.perf_counter() - started) * 1000, 3) if expect is not None else connected_ms
        )
        return Response(status_code=0, headers={}, body=received, latency_ms=latency_ms)


async def run_checks(
    specs: Iterable[CheckSpec],
    *,
    policy: AddressPolicy | None = None,
    per_host_limit: int = PER_HOST_LIMIT,
    max_connections: int = MAX_CONNECTIONS,
    max_body_bytes: int = MAX_BODY_BYTES,
    excerpt_bytes: int = EXCERPT_BYTES,
    trust: str | None = None,
    inner_backend: SocketFactory | None = None,
) -> list[CheckResult]:
    """Run checks concurrently with a runner of their own; results in the order of `specs`.

    A spec without a policy uses `policy`, else the default AddressPolicy (public addresses
    only). Code that runs several groups of checks together (a batch with suites) shares one
    `CheckRunner` instead, so the limits hold across all of them.
    """
    async with CheckRunner(
        per_host_limit=per_host_limit,
        max_connections=max_connections,
        max_body_bytes=max_body_bytes,
        excerpt_bytes=excerpt_bytes,
        trust=trust,
        inner_backend=inner_backend,
    ) as runner:
        return await runner.run_many(specs, policy or AddressPolicy())


def run_checks_sync(specs: Iterable[CheckSpec], **options: Any) -> list[CheckResult]:
    """Blocking wrapper for Celery tasks and management commands (no running event loop)."""
    return asyncio.run(run_checks(specs, **options))
