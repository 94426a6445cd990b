"""Test helpers for code that makes health-check requests: a target server on 127.0.0.1, a spy
network backend, and a loopback-only guard on socket connects.

They live here rather than in a conftest so that the monitoring app's Django tests can use the
same targets. Nothing in this module is used at run time.

    with TargetServer() as target:
        results = run_checks_sync([CheckSpec("api", "GET", target.url("/ok"))],
                                  policy=AddressPolicy(allow=[f"127.0.0.1:{target.port}"]))
        assert target.paths() == ["/ok"]
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpcore

# Every wait inside the server is bounded so a forgotten stop() cannot keep a test run alive.
MAX_WAIT_S = 30.0


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the services we check
    # Headers and body go out in separate writes; with Nagle on, the body waits for the
    # client's delayed ACK and every response gains ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def setup(self) -> None:
        super().setup()
        self.server.owner._connection_opened()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._connection_closed()

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(split.query))
        target = self.server.owner
        target._record(
            RecordedRequest(
                self.command, split.path, dict(self.headers.items()), body, self.client_address[1]
            )
        )
        with target._in_flight_lock:
            target.in_flight += 1
            target.max_in_flight = max(target.max_in_flight, target.in_flight)
        try:
            route = target.routes.get(split.path)
            if route is None:
                self._send(404, b"no such route")
            else:
                route(self, query)
        finally:
            with target._in_flight_lock:
                target.in_flight -= 1

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # The default backlog of 5 drops SYNs when a test opens many connections at once, and the
    # client's retransmit adds a full second.
    request_queue_size = 128
    owner: TargetServer


Route = Callable[[_Handler, dict[str, str]], None]


def _ok(handler: _Handler, query: dict[str, str]) -> None:
    body = json.dumps({"status": "ok", "database": "connected", "items": [{"name": "web"}]})
    handler._send(200, body.encode(), "application/json", {"X-Service": "release-center"})


def _slow(handler: _Handler, query: dict[str, str]) -> None:
    time.sleep(min(float(query.get("ms", "300")) / 1000, MAX_WAIT_S))
    handler._send(200, b"slow but fine")


def _hang(handler: _Handler, query: dict[str, str]) -> None:
    # Never answers; released when the server stops so the thread ends.
    handler.server.owner.stopping.wait(MAX_WAIT_S)
    handler.close_connection = True


def _drip(handler: _Handler, query: dict[str, str]) -> None:
    # Sends a byte at a time: each read succeeds quickly, so only a deadline on the whole
    # exchange (not a per-read timeout) catches it.
    count = min(int(query.get("n", "50")), 1000)
    interval = float(query.get("interval", "0.1"))
    handler.send_response(200)
    handler.send_header("Content-Length", str(count))
    handler.end_headers()
    try:
        for _ in range(count):
            if handler.server.owner.stopping.wait(interval):
                break
            handler.wfile.write(b"x")
            handler.wfile.flush()
    except OSError:
        pass
    handler.close_connection = True


def _status(code: int) -> Route:
    def route(handler: _Handler, query: dict[str, str]) -> None:
        handler._send(code, f"status {code}".encode())

    return route


def _redirect(handler: _Handler, query: dict[str, str]) -> None:
    handler._send(302, b"", headers={"Location": query.get("to", "/ok")})


def _big(handler: _Handler, query: dict[str, str]) -> None:
    size = min(int(query.get("kb", "100")), 10_000) * 1024
    handler._send(200, b"BEGIN" + b"x" * (size - 5))


def _text(handler: _Handler, query: dict[str, str]) -> None:
    handler._send(200, b"hello from release center\nbuild 2024.1 ready\n")


def _echo(handler: _Handler, query: dict[str, str]) -> None:
    body = json.dumps(
        {
            "method": handler.command,
            "host": handler.headers.get("Host"),
            "cookie": handler.headers.get("Cookie"),
        }
    )
    handler._send(200, body.encode(), "application/json")


def _cookie(handler: _Handler, query: dict[str, str]) -> None:
    handler._send(200, b"have a cookie", headers={"Set-Cookie": "session=abc123; Path=/"})


class TargetServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 with routes for health-check tests.

    Routes: /ok (JSON, X-Service header), /slow?ms=, /hang, /drip?n=&interval=, /401, /503,
    /redirect?to=, /big?kb=, /text, /echo (method, Host, Cookie), /cookie (sets one). Records every
    request it receives, and counts requests in flight and TCP connections open at once.
    """

    def __init__(
        self, routes: dict[str, Route] | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.routes: dict[str, Route] = {
            "/ok": _ok,
            "/slow": _slow,
            "/hang": _hang,
            "/drip": _drip,
            "/401": _status(401),
            "/503": _status(503),
            "/redirect": _redirect,
            "/big": _big,
            "/text": _text,
            "/echo": _echo,
            "/cookie": _cookie,
        }
        self.routes.update(routes or {})
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        # TCP connections open at once (accepted and not yet closed), and the most seen.
        self.open_connections = 0
        self.max_open_connections = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._in_flight_lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.scheme = "http"
        if tls is not None:
            # HTTPS: every accepted connection does its handshake in its handler's thread.
            self._server.socket = tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
            self.scheme = "https"
        self.port: int = self._server.server_address[1]
        # A short poll interval keeps stop() (and so every test's teardown) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def _connection_opened(self) -> None:
        with self._in_flight_lock:
            self.open_connections += 1
            self.max_open_connections = max(self.max_open_connections, self.open_connections)

    def _connection_closed(self) -> None:
        with self._in_flight_lock:
            self.open_connections -= 1

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]

    def connections(self) -> set[int]:
        """Client ports seen: one per TCP connection the server accepted requests on."""
        with self._lock:
            return {r.client_port for r in self.requests}

    def url(self, path: str = "/ok") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def start(self) -> TargetServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(MAX_WAIT_S)

    def __enter__(self) -> TargetServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class SpyBackend(httpcore.AsyncNetworkBackend):
    """Records every connect the guard lets through; opens real sockets only to loopback.

    Used as the guard's inner backend, its `attempts` list is the proof that a refused
    destination was never tried. A non-loopback attempt is recorded and refused here as well, so
    a broken guard makes a test fail rather than reach the network. It serves both clients:
    httpcore calls `connect_tcp` (httpx, `make_client`); the check engine (aiohttp) and TCP
    probes call `socket_factory`.
    """

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int]] = []
        self._real = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        self.attempts.append((host, port))
        if not _is_loopback(host):
            raise httpcore.ConnectError(f"test spy refused a non-loopback connect to {host}")
        return await self._real.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("test spy refuses unix sockets")

    def socket_factory(self, addr_info: Any) -> socket.socket:
        """aiohttp's connector (the check engine) and TCP probes ask this for each socket
        they connect: the socket layer under the guard."""
        family, type_, proto, _, sockaddr = addr_info
        host, port = sockaddr[0], sockaddr[1]
        self.attempts.append((host, port))
        if not _is_loopback(host):
            raise ConnectionRefusedError(f"test spy refused a non-loopback connect to {host}")
        return socket.socket(family=family, type=type_, proto=proto)

    async def sleep(self, seconds: float) -> None:
        await self._real.sleep(seconds)


class LoopbackOnlyAuditHook:
    """Process-wide record of socket connects that aborts any to a non-loopback address.

    Audit hooks cannot be removed, so install this only in a process that exists for the test
    (the network-namespace subprocess), never in a shared test session.
    """

    def __init__(self) -> None:
        self.loopback: list[Any] = []
        self.refused: list[Any] = []

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "socket.connect":
            return
        address = args[1]
        if isinstance(address, str | bytes):
            # A unix socket path: local by definition.
            self.loopback.append(address)
            return
        host = address[0] if isinstance(address, tuple) else str(address)
        if isinstance(host, str) and _is_loopback(host):
            self.loopback.append(address)
            return
        self.refused.append(address)
        raise ConnectionRefusedError(f"loopback-only test process refused connect to {address}")

    def install(self) -> LoopbackOnlyAuditHook:
        sys.addaudithook(self)
        return self
