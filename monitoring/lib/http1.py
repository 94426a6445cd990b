"""A small HTTP/1.1 client for health checks, on asyncio protocols, behind the address guard.

Why not httpx here: a health check is one small request and one small response, so the cost of
a check is almost all client bookkeeping. httpx + httpcore + h11 spend ~0.8 ms of CPU on each
(bench/bench_checks.py: bare httpx 900-1,300 requests/s on loopback targets), which is below
what Prometheus's blackbox exporter does with the same targets. This client parses the response
in the protocol's `data_received` and wakes the waiting check once, when the response is
complete: bare, 16,000-38,000 requests/s on the same bench, and the engine runs 6-10 times as
many checks per second through it as through httpx. httpx stays the client for everything
else (webhooks, deployment strategies) and for the engine when it is handed an httpx client
(`make_client`) or asked for it (`http_client="httpx"`).

What it does, and no more:

* HTTP/1.1 over TCP, or TLS with the `ssl` module (certificates verified against certifi's
  roots, as httpx does, unless `verify` says otherwise); no proxies (a proxy would connect on
  our behalf, past the guard), no HTTP/2, no cookies (none are ever stored or sent), no
  decompression (we ask for `Accept-Encoding: identity`).
* Bodies framed by Content-Length, chunked transfer coding or connection close; HEAD, 1xx, 204
  and 304 answers have none. A body is kept up to `max_body` bytes; past that the answer is
  marked truncated and the connection closed rather than drained.
* A keep-alive pool per origin (scheme, host, port) of at most `max_idle_per_origin` idle
  connections, dropped after `keepalive_expiry` seconds. A pooled connection the server closed
  is noticed (its end-of-file arrived while it was idle) and discarded; one that closes right
  after we reused it, before any byte of the answer, is retried once on a new connection when
  the method is idempotent, and reported otherwise.
* The guard, at connect time: every new connection resolves the host itself, asks the policy
  about every address it resolved to (`ssrf.resolve_checked`) and connects to the checked IP,
  the Host header and TLS server name still carrying the URL's name. Redirects (when asked to
  follow them) go through the same path, so a hop to a refused address is refused before a
  socket is opened. One client serves one address policy: a connection opened under a lenient
  policy never serves a check under a stricter one.

The whole exchange is bounded by the caller (`asyncio.timeout` in the engine, or `timeout=`
here): a cancelled request closes its connection, so nothing half-read returns to the pool.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import certifi
import httpx

from monitoring.lib.ssrf import AddressPolicy, resolve_checked

USER_AGENT = "ReleaseCenter-HealthCheck/1"
MAX_HEAD_BYTES = 64 * 1024
MAX_CHUNK_LINE = 4096
MAX_REDIRECTS = 5
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
# RFC 9110 9.2.2: repeating these has the same effect as sending them once, so a request that a
# reused connection lost before any answer may be sent again on a fresh one.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Methods that carry a body by definition get "Content-Length: 0" when they have none, as httpx
# sends; some servers answer 411 otherwise.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class HTTPError(Exception):
    """Anything that kept a request from getting a complete answer."""


class ConnectError(HTTPError):
    """No connection could be opened (refused, unreachable, TLS handshake failed)."""


class RemoteProtocolError(HTTPError):
    """The server broke HTTP/1.1: a malformed answer, or it closed the connection mid-answer."""


class ServerDisconnected(RemoteProtocolError):
    """The server closed the connection before the answer was complete.

    `before_answer`: not one byte of the answer had arrived, which on a reused keep-alive
    connection means the server had closed it while we were sending.
    """

    def __init__(self, message: str, *, before_answer: bool) -> None:
        super().__init__(message)
        self.before_answer = before_answer


class TooManyRedirects(HTTPError):
    pass


class InvalidRequest(HTTPError):
    """The request cannot be sent as given (URL scheme, header with a line break)."""


class Dialer(Protocol):
    """Opens the TCP (or TLS) connection to an address the guard has already allowed.

    The default calls `loop.create_connection`; tests pass a spy (monitoring.lib.testing's
    SpyBackend) whose record of calls proves that a refused destination was never dialled.
    """

    async def dial(
        self,
        host: str,
        port: int,
        protocol_factory: Callable[[], asyncio.Protocol],
        *,
        ssl: ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> tuple[asyncio.BaseTransport, asyncio.Protocol]: ...


class LoopDialer:
    async def dial(
        self,
        host: str,
        port: int,
        protocol_factory: Callable[[], asyncio.Protocol],
        *,
        ssl: ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
        loop = asyncio.get_running_loop()
        return await loop.create_connection(
            protocol_factory, host, port, ssl=ssl, server_hostname=server_hostname
        )


@dataclass(slots=True)
class Reply:
    status_code: int
    # Lower-case names; repeated headers joined with ", " (what httpx's Headers.items() gives).
    headers: dict[str, str]
    body: bytes
    truncated: bool
    url: str


@dataclass(frozen=True, slots=True)
class Target:
    """What a request needs of its URL, parsed once per distinct URL."""

    url: httpx.URL
    text: str
    scheme: str
    host: str  # what the guard resolves and judges: a name or an IP literal
    port: int
    origin: tuple[str, str, int]
    host_header: bytes
    request_target: bytes


@lru_cache(maxsize=4096)
def parse_url(url: str | httpx.URL) -> Target:
    """The parts of an http(s) URL a request needs; cached, as checks repeat their URLs."""
    parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidRequest(f"only http and https URLs with a host can be requested: {url}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    # raw_host is the IDNA (ASCII) form; IPv6 literals come without brackets.
    host = parsed.raw_host.decode("ascii")
    return Target(
        url=parsed,
        text=str(parsed),
        scheme=parsed.scheme,
        host=host,
        port=port,
        origin=(parsed.scheme, host, port),
        host_header=parsed.netloc,
        request_target=parsed.raw_path or b"/",
    )


_default_ssl: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    """certifi's roots, hostname checks on, HTTP/1.1 by ALPN: built once per process (~10 ms)."""
    global _default_ssl
    if _default_ssl is None:
        _default_ssl = _ssl_context(True)
    return _default_ssl


def _ssl_context(verify: bool | str | ssl.SSLContext) -> ssl.SSLContext:
    """True: certifi's roots (what httpx trusts); a path: that CA bundle; False: no checks."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=certifi.where() if verify is True else verify)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _decode(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")

# Parser states.
_IDLE, _HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER, _UNTIL_CLOSE = range(8)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses answers as they arrive and completes one future each.

    The answer is handled in `data_received`, so a request costs the waiting task one wake-up
    however many segments the answer came in.
    """

    def __init__(self, origin: tuple[str, str, int]) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.state = _IDLE
        self.waiter: asyncio.Future[Reply] | None = None
        self.closed = False  # the server closed (or the socket broke): never reuse
        self.reusable = True
        self.idle_since = 0.0
        # Per answer.
        self.received = False
        self.head_only = False
        self.max_body = 0
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.remaining = 0
        self.truncated = False
        self.url = ""

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.state == _IDLE:
            # Bytes nobody asked for: the connection is out of step with the server.
            self.reusable = False
            return
        self.received = True
        self.buffer += data
        try:
            self._advance()
        except RemoteProtocolError as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        self.closed = True
        self._ended(None)
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._ended(exc)

    # --- requests ------------------------------------------------------------------------------

    def begin(
        self, waiter: asyncio.Future[Reply], head_only: bool, max_body: int, url: str
    ) -> None:
        self.waiter = waiter
        self.state = _HEAD
        self.received = False
        self.head_only = head_only
        self.max_body = max_body
        self.body = bytearray()
        self.truncated = False
        self.url = url

    def usable(self, now: float, expiry: float) -> bool:
        return (
            not self.closed
            and self.reusable
            and self.transport is not None
            and not self.transport.is_closing()
            and now - self.idle_since < expiry
        )

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            # abort: nothing we could still send matters, and close() would wait for buffers.
            self.transport.abort()

    # --- parsing -------------------------------------------------------------------------------

    def _ended(self, exc: Exception | None) -> None:
        if self.state == _UNTIL_CLOSE:
            self._finish(keep=False)
        elif self.state != _IDLE:
            what = "before it answered" if not self.received else "in the middle of its answer"
            self._fail(
                ServerDisconnected(
                    f"the server closed the connection {what}", before_answer=not self.received
                )
            )

    def _fail(self, exc: HTTPError) -> None:
        self.state = _IDLE
        self.reusable = False
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def _finish(self, keep: bool) -> None:
        if not keep or self.buffer:
            # Leftover bytes would be mistaken for the next answer.
            self.reusable = False
        self.state = _IDLE
        body = bytes(self.body)
        if len(body) > self.max_body:
            body = body[: self.max_body]
        reply = Reply(self.status, self.headers, body, self.truncated, self.url)
        self.body = bytearray()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)

    def _take_body(self, data: bytes | bytearray) -> bool:
        """Keep body bytes up to the cap; True when the cap is exceeded (stop reading)."""
        room = self.max_body + 1 - len(self.body)
        if len(data) >= room:
            self.body += data[:room]
            self.truncated = True
            return True
        self.body += data
        return False

    def _take_remaining(self, buffer: bytearray) -> bool:
        """Move up to ``remaining`` bytes (of a sized body or a chunk) from the buffer into the
        body; True when the cap is exceeded (stop reading)."""
        take = min(self.remaining, len(buffer))
        chunk = buffer[:take]
        del buffer[:take]
        self.remaining -= take
        return self._take_body(chunk)

    def _advance(self) -> None:
        buffer = self.buffer
        while True:
            state = self.state
            if state == _HEAD:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        raise RemoteProtocolError("the response head exceeds 64 KB")
                    return
                head = bytes(buffer[:end])
                del buffer[: end + 4]
                if self._head(head):
                    continue  # an interim (1xx) answer: the real one follows
                if self.state == _IDLE:
                    self._finish(keep=self.reusable)
                    return
            elif state == _LENGTH:
                if not buffer:
                    return
                if self._take_remaining(buffer):
                    self._finish(keep=False)
                    return
                if self.remaining == 0:
                    self._finish(keep=self.reusable)
                    return
                return
            elif state == _CHUNK_SIZE:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_CHUNK_LINE:
                        raise RemoteProtocolError("a chunk size line exceeds 4 KB")
                    return
                line = bytes(buffer[:end]).split(b";", 1)[0].strip()
                del buffer[: end + 2]
                # int() would also take "0x10", "+1" and "1_0"; a chunk size is hex digits.
                if not line or not set(line) <= _HEX_DIGITS:
                    raise RemoteProtocolError(f"invalid chunk size {line[:20]!r}")
                size = int(line, 16)
                if size == 0:
                    self.state = _TRAILER
                else:
                    self.remaining = size
                    self.state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                if not buffer:
                    return
                if self._take_remaining(buffer):
                    self._finish(keep=False)
                    return
                if self.remaining == 0:
                    self.state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                if len(buffer) < 2:
                    return
                if buffer[:2] != b"\r\n":
                    raise RemoteProtocolError("a chunk does not end with CRLF")
                del buffer[:2]
                self.state = _CHUNK_SIZE
            elif state == _TRAILER:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        raise RemoteProtocolError("the chunked trailer exceeds 64 KB")
                    return
                del buffer[: end + 2]
                if end == 0:
                    self._finish(keep=self.reusable)
                    return
            elif state == _UNTIL_CLOSE:
                if buffer:
                    data = bytes(buffer)
                    buffer.clear()
                    if self._take_body(data):
                        self._finish(keep=False)
                return
            else:
                return

    def _head(self, head: bytes) -> bool:
        """Parse a status line and headers and choose the body framing; True for 1xx."""
        lines = head.split(b"\r\n")
        status_line = lines[0]
        version, _, rest = status_line.partition(b" ")
        code_text = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(code_text) != 3 or not code_text.isdigit():
            raise RemoteProtocolError(f"not an HTTP/1.x status line: {status_line[:60]!r}")
        status = int(code_text)
        headers: dict[str, str] = {}
        lengths: set[bytes] = set()
        chunked = False
        other_coding = False
        connection = b""
        text_key = ""
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t") and text_key:
                # Obsolete line folding (RFC 9112 5.2): the line continues the previous value.
                headers[text_key] += " " + _decode(line.strip(b" \t"))
                continue
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip() or b" " in name:
                raise RemoteProtocolError(f"malformed header line {line[:60]!r}")
            value = value.strip(b" \t")
            key = name.lower()
            if key == b"content-length":
                # "Content-Length: 38, 38" is one length said twice.
                lengths.update(part.strip() for part in value.split(b","))
            elif key == b"transfer-encoding":
                codings = [c.strip().lower() for c in value.split(b",")]
                chunked = codings[-1] == b"chunked"
                other_coding = not chunked
            elif key == b"connection":
                connection = value.lower()
            text_key = key.decode("latin-1")
            text = _decode(value)
            if text_key in headers:
                headers[text_key] += ", " + text
            else:
                headers[text_key] = text
        if 100 <= status < 200 and status != 101:
            return True
        self.status = status
        self.headers = headers
        if b"close" in connection or (version == b"HTTP/1.0" and b"keep-alive" not in connection):
            self.reusable = False
        if status == 101:
            # We never ask to switch protocols; whatever follows is not HTTP/1.1.
            self.reusable = False
        if self.head_only or status in (204, 304) or status == 101:
            self.state = _IDLE
        elif chunked or other_coding:
            if lengths:
                # Both framings at once is how request smuggling starts; trust neither later.
                self.reusable = False
            self.state = _CHUNK_SIZE if chunked else _UNTIL_CLOSE
            if other_coding:
                self.reusable = False
        elif lengths:
            if len(lengths) > 1:
                raise RemoteProtocolError("conflicting Content-Length headers")
            [length] = lengths
            if not length.isdigit():
                raise RemoteProtocolError(f"invalid Content-Length {length[:20]!r}")
            self.remaining = int(length)
            self.state = _LENGTH if self.remaining else _IDLE
        else:
            self.reusable = False
            self.state = _UNTIL_CLOSE
        return False


class Http1Client:
    """Pooled, guarded HTTP/1.1 requests under one address policy.

    `dialer` opens sockets to addresses the guard allowed (tests pass a spy). Use one client per
    policy and event loop, and close it (`aclose`, or `async with`) when done.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        max_idle_per_origin: int = 4,
        keepalive_expiry: float = 5.0,
        verify: bool | str | ssl.SSLContext = True,
        dialer: Dialer | None = None,
        headers: Mapping[str, str] | None = None,
        max_redirects: int = MAX_REDIRECTS,
    ) -> None:
        self.policy = policy
        self.max_idle_per_origin = max(0, max_idle_per_origin)
        self.keepalive_expiry = keepalive_expiry
        self.dialer: Dialer = dialer if dialer is not None else LoopDialer()
        self.max_redirects = max_redirects
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._closed = False
        defaults = {
            "user-agent": ("User-Agent", USER_AGENT),
            "accept": ("Accept", "*/*"),
            # Decompressing is where a small response becomes a large one; health endpoints are
            # small, so ask for them uncompressed unless a check sets its own Accept-Encoding.
            "accept-encoding": ("Accept-Encoding", "identity"),
        }
        for name, value in (headers or {}).items():
            defaults[name.lower()] = (name, value)
        self._default_headers = defaults
        self._default_block = _header_block(defaults.values())
        self.connections_opened = 0

    async def __aenter__(self) -> Http1Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def idle_connections(self) -> int:
        return sum(len(c) for c in self._idle.values())

    async def request(
        self,
        method: str,
        url: str | httpx.URL | Target,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        follow_redirects: bool = False,
        max_body: int = 1024 * 1024,
        timeout: float | None = None,
    ) -> Reply:
        """Send one request (and its redirects, if asked to follow them); the whole exchange is
        bounded by `timeout` when given."""
        if timeout is not None:
            async with asyncio.timeout(timeout):
                return await self._request(method, url, headers, body, follow_redirects, max_body)
        return await self._request(method, url, headers, body, follow_redirects, max_body)

    async def _request(
        self,
        method: str,
        url: str | httpx.URL | Target,
        headers: Mapping[str, str] | None,
        body: bytes | str | None,
        follow_redirects: bool,
        max_body: int,
    ) -> Reply:
        method = method.upper()
        if not _token(method):
            raise InvalidRequest(f"{method!r} is not an HTTP method")
        content = body.encode() if isinstance(body, str) else body
        extra = dict(headers or {})
        target = url if isinstance(url, Target) else parse_url(url)
        for hop in range(self.max_redirects + 1):
            reply = await self._send(method, target, extra, content, max_body)
            location = reply.headers.get("location")
            if not follow_redirects or reply.status_code not in REDIRECT_CODES or not location:
                return reply
            if hop == self.max_redirects:
                break
            try:
                following = parse_url(target.url.join(location))
            except (httpx.InvalidURL, TypeError, ValueError) as exc:
                raise RemoteProtocolError(
                    f"invalid redirect location {location!r}: {exc}"
                ) from None
            # Browsers' (and httpx's) rules: 303, and 301/302 after a POST, become a GET without
            # a body; 307 and 308 repeat the request as it was.
            becomes_get = (reply.status_code == 303 and method != "HEAD") or (
                reply.status_code in (301, 302) and method == "POST"
            )
            if becomes_get:
                method, content = "GET", None
                extra = {
                    k: v
                    for k, v in extra.items()
                    if k.lower() not in ("content-length", "content-type", "transfer-encoding")
                }
            if following.origin != target.origin and not (
                following.host == target.host
                and target.scheme == "http"
                and following.scheme == "https"
            ):
                # Credentials are for the origin they were written for.
                extra = {k: v for k, v in extra.items() if k.lower() != "authorization"}
            extra = {k: v for k, v in extra.items() if k.lower() not in ("host", "cookie")}
            target = following
        raise TooManyRedirects(f"more than {self.max_redirects} redirects, last to {target.url}")

    def _head_bytes(
        self, method: str, target: Target, headers: Mapping[str, str], body: bytes | None
    ) -> bytes:
        first = b"%s %s HTTP/1.1\r\n" % (method.encode("ascii"), target.request_target)
        if not headers:
            block = self._default_block
            host = b"Host: " + target.host_header + b"\r\n"
        else:
            merged = dict(self._default_headers)
            for name, value in headers.items():
                merged[name.lower()] = (name, value)
            given_host = merged.pop("host", None)
            # The body is framed here, from what is sent; a check's own framing headers would
            # contradict it.
            merged.pop("content-length", None)
            merged.pop("transfer-encoding", None)
            block = _header_block(merged.values())
            if given_host is not None:
                host = _header_block([("Host", given_host[1])])
            else:
                host = b"Host: " + target.host_header + b"\r\n"
        length = b""
        if body is not None or method in BODY_METHODS:
            length = b"Content-Length: %d\r\n" % len(body or b"")
        return first + host + block + length + b"\r\n"

    async def _send(
        self,
        method: str,
        target: Target,
        headers: Mapping[str, str],
        body: bytes | None,
        max_body: int,
    ) -> Reply:
        if self._closed:
            raise InvalidRequest("the client is closed")
        data = self._head_bytes(method, target, headers, body)
        if body:
            data += body
        for attempt in (1, 2):
            # The retry of a request a stale connection lost always gets a new connection.
            connection = self._pooled(target.origin) if attempt == 1 else None
            reused = connection is not None
            if connection is None:
                connection = await self._open(target)
            waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            connection.begin(waiter, method == "HEAD", max_body, target.text)
            assert connection.transport is not None
            connection.transport.write(data)
            try:
                reply = await waiter
            except ServerDisconnected as exc:
                connection.close()
                if not (reused and exc.before_answer):
                    raise
                if attempt == 1 and method in IDEMPOTENT:
                    continue  # a stale keep-alive connection: once more on a new one
                raise ServerDisconnected(
                    f"{exc} (on a reused keep-alive connection; {method} is not sent twice)",
                    before_answer=True,
                ) from None
            except BaseException:
                # Failed, or cancelled (the check's deadline): a half-read answer must not reach
                # the next request.
                connection.close()
                raise
            self._release(connection)
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _pooled(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.usable(now, self.keepalive_expiry):
                return connection
            connection.close()
        return None

    def _release(self, connection: _Connection) -> None:
        if self._closed or not connection.usable(time.monotonic(), float("inf")):
            connection.close()
            return
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= self.max_idle_per_origin:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def _open(self, target: Target) -> _Connection:
        # The guard: resolve here, judge every address, connect only to a judged one.
        try:
            addresses = await resolve_checked(self.policy, target.host, target.port)
        except OSError as exc:
            raise ConnectError(f"could not resolve {target.host!r}: {exc}") from exc
        tls = None
        server_hostname = None
        if target.scheme == "https":
            if self._ssl is None:
                self._ssl = (
                    default_ssl_context() if self._verify is True else _ssl_context(self._verify)
                )
            tls = self._ssl
            server_hostname = target.host
        last: Exception | None = None
        for address in addresses:
            try:
                _, protocol = await self.dialer.dial(
                    address,
                    target.port,
                    lambda: _Connection(target.origin),
                    ssl=tls,
                    server_hostname=server_hostname,
                )
            except (OSError, ssl.SSLError) as exc:
                last = exc
                continue
            self.connections_opened += 1
            return protocol  # type: ignore[return-value]
        raise ConnectError(_connect_message(last)) from last


def _connect_message(exc: Exception | None) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) if exc else "no address to connect to"


def _header_block(pairs: Any) -> bytes:
    lines = []
    for name, value in pairs:
        if not _token(name):
            raise InvalidRequest(f"{name!r} is not a header name")
        text = str(value)
        if "\r" in text or "\n" in text or "\0" in text:
            raise InvalidRequest(f"the value of {name} contains a line break")
        lines.append(b"%s: %s\r\n" % (name.encode("ascii"), text.encode("utf-8")))
    return b"".join(lines)


_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _token(name: str) -> bool:
    return bool(name) and all(c in _TOKEN for c in name)


__all__ = [
    "ConnectError",
    "Dialer",
    "HTTPError",
    "Http1Client",
    "InvalidRequest",
    "LoopDialer",
    "RemoteProtocolError",
    "Reply",
    "ServerDisconnected",
    "Target",
    "TooManyRedirects",
    "default_ssl_context",
    "parse_url",
]
