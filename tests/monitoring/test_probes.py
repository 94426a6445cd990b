"""Probe kinds and transport options of the aiohttp engine, against servers on 127.0.0.1.

TCP probes, the served TLS certificate (expiry, issuer, names, version), compressed bodies
and their cap, a proxy judged by the guard, client certificates and the HTTP version
assertion. Every server here is started by the test; nothing else is contacted.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from monitoring.lib.engine import CheckSpec, ClientCertificate, run_checks
from monitoring.lib.ssrf import AddressPolicy
from monitoring.lib.testing import SpyBackend, TargetServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def self_signed(days: float, name: str = "status.test") -> tuple[str, str, datetime]:
    """(certificate PEM, key PEM, notAfter) for 127.0.0.1 and `name`, valid for `days`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    not_after = (now + timedelta(days=days)).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert_pem, key_pem, not_after


def server_context(
    cert_pem: str, key_pem: str, tmp_path: Path, client_ca: str | None = None
) -> ssl.SSLContext:
    pem = tmp_path / f"server-{id(cert_pem)}.pem"
    pem.write_text(cert_pem + key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=client_ca)
    return context


def allowing(*ports: int) -> AddressPolicy:
    return AddressPolicy(allow=[f"127.0.0.1:{port}" for port in ports])


# --- TLS certificates ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_certificate_expiring_in_five_days_fails_with_its_date(tmp_path: Path) -> None:
    cert_pem, key_pem, not_after = self_signed(days=5)
    with TargetServer(tls=server_context(cert_pem, key_pem, tmp_path)) as target:
        [result] = await run_checks(
            [
                CheckSpec(
                    "tls",
                    "GET",
                    target.url("/ok"),
                    assertions=[
                        {"type": "status", "equals": 200},
                        {"type": "certificate_days_left", "at_least": 14},
                        {"type": "tls_version", "at_least": "1.2"},
                    ],
                )
            ],
            policy=allowing(target.port),
            trust=cert_pem,
        )
    assert result.error is None
    assert not result.passed
    assert len(result.failures) == 1, [f.message for f in result.failures]
    [failure] = result.failures
    assert failure.assertion["type"] == "certificate_days_left"
    assert not_after.strftime("%Y-%m-%d") in failure.message
    assert "expected at least 14 days" in failure.message
    assert result.tls is not None
    assert result.tls.not_after == not_after
    assert result.tls.issuer == "status.test"
    assert set(result.tls.names) == {"status.test", "127.0.0.1"}
    assert result.tls.version in ("TLSv1.2", "TLSv1.3")


@pytest.mark.anyio
async def test_a_certificate_far_from_expiry_passes(tmp_path: Path) -> None:
    cert_pem, key_pem, _ = self_signed(days=90)
    with TargetServer(tls=server_context(cert_pem, key_pem, tmp_path)) as target:
        [result] = await run_checks(
            [
                CheckSpec(
                    "tls",
                    "GET",
                    target.url("/ok"),
                    assertions=[{"type": "certificate_days_left", "at_least": 14}],
                )
            ],
            policy=allowing(target.port),
            trust=cert_pem,
        )
    assert result.passed, result.failures or result.error


@pytest.mark.anyio
async def test_an_untrusted_certificate_is_a_clear_error(tmp_path: Path) -> None:
    cert_pem, key_pem, _ = self_signed(days=90)
    with TargetServer(tls=server_context(cert_pem, key_pem, tmp_path)) as target:
        [result] = await run_checks(
            [CheckSpec("tls", "GET", target.url("/ok"))], policy=allowing(target.port)
        )
    assert result.error is not None
    assert result.error.startswith("TLS certificate not accepted")


@pytest.mark.anyio
async def test_tls_assertions_on_plain_http_fail_rather_than_pass() -> None:
    with TargetServer() as target:
        [result] = await run_checks(
            [
                CheckSpec(
                    "plain",
                    "GET",
                    target.url("/ok"),
                    assertions=[{"type": "certificate_days_left", "at_least": 1}],
                )
            ],
            policy=allowing(target.port),
        )
    assert not result.passed
    assert result.failures[0].message.startswith("no TLS certificate")


@pytest.mark.anyio
async def test_client_certificate_opens_a_server_that_requires_one(tmp_path: Path) -> None:
    server_cert, server_key, _ = self_signed(days=90)
    client_cert, client_key, _ = self_signed(days=90, name="release-center")
    context = server_context(server_cert, server_key, tmp_path, client_ca=client_cert)
    with TargetServer(tls=context) as target:
        results = await run_checks(
            [
                CheckSpec(
                    "with",
                    "GET",
                    target.url("/ok"),
                    client_certificate=ClientCertificate(client_cert, client_key),
                ),
                CheckSpec("without", "GET", target.url("/ok"), timeout_s=3),
            ],
            policy=allowing(target.port),
            trust=server_cert,
        )
    assert results[0].passed, results[0].error
    assert not results[1].passed
    assert target.paths() == ["/ok"]


# --- HTTP version, compression ---------------------------------------------------------------


@pytest.mark.anyio
async def test_http_version_assertion() -> None:
    with TargetServer() as target:
        results = await run_checks(
            [
                CheckSpec(
                    "v11",
                    "GET",
                    target.url("/ok"),
                    assertions=[{"type": "http_version", "equals": "1.1"}],
                ),
                CheckSpec(
                    "v2",
                    "GET",
                    target.url("/ok"),
                    assertions=[{"type": "http_version", "at_least": "2"}],
                ),
            ],
            policy=allowing(target.port),
        )
    assert results[0].passed and results[0].http_version == "1.1"
    assert not results[1].passed
    assert results[1].failures[0].message == "HTTP/1.1, expected HTTP/2 or later"


def _gzipped(payload: bytes) -> Any:
    compressed = gzip.compress(payload)

    def route(handler: Any, query: dict[str, str]) -> None:
        handler._send(200, compressed, "application/json", {"Content-Encoding": "gzip"})

    return route


@pytest.mark.anyio
async def test_a_compressed_body_is_decompressed_for_assertions() -> None:
    routes = {"/gz": _gzipped(b'{"status": "ok"}')}
    with TargetServer(routes) as target:
        [result] = await run_checks(
            [
                CheckSpec(
                    "gz",
                    "GET",
                    target.url("/gz"),
                    assertions=[{"type": "json", "path": "$.status", "value": "ok"}],
                )
            ],
            policy=allowing(target.port),
        )
        [request] = target.requests
    assert result.passed, result.failures
    assert "gzip" in request.headers["Accept-Encoding"]


@pytest.mark.anyio
async def test_a_compression_bomb_is_cut_at_the_cap() -> None:
    # 64 MB of zeros compress to ~64 KB; only the cap's worth is ever decompressed and kept.
    routes = {"/bomb": _gzipped(b"0" * (64 * 1024 * 1024))}
    with TargetServer(routes) as target:
        [result] = await run_checks(
            [
                CheckSpec(
                    "bomb",
                    "GET",
                    target.url("/bomb"),
                    assertions=[{"type": "json", "path": "$.status", "op": "exists"}],
                )
            ],
            policy=allowing(target.port),
            max_body_bytes=256 * 1024,
            excerpt_bytes=64,
        )
    assert result.error is None
    assert not result.passed
    assert result.failures[0].message.endswith("body exceeded the size limit and was cut")
    assert result.excerpt == "0" * 64


# --- proxy ---------------------------------------------------------------------------------------


class _ProxyHandler(BaseHTTPRequestHandler):
    """A forward proxy for plain HTTP: takes absolute-form requests and relays them."""

    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self.server.seen.append(self.path)
        target = urlsplit(self.path)
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=5)
        upstream.request("GET", target.path or "/", headers={"Host": target.netloc})
        answer = upstream.getresponse()
        body = answer.read()
        self.send_response(answer.status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Via", "1.1 test-proxy")
        self.end_headers()
        self.wfile.write(body)
        upstream.close()


@pytest.fixture
def proxy() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
    server.daemon_threads = True
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.mark.anyio
async def test_a_check_goes_through_an_allowed_proxy(proxy: Any) -> None:
    proxy_port = proxy.server_address[1]
    with TargetServer() as target:
        [result] = await run_checks(
            [
                CheckSpec(
                    "via proxy",
                    "GET",
                    target.url("/ok"),
                    proxy=f"http://127.0.0.1:{proxy_port}",
                    assertions=[{"type": "header", "name": "Via", "exists": True}],
                )
            ],
            policy=allowing(target.port, proxy_port),
        )
    assert result.passed, result.error or result.failures
    assert proxy.seen == [target.url("/ok")]


@pytest.mark.anyio
async def test_a_proxy_the_guard_refuses_is_never_contacted(proxy: Any) -> None:
    proxy_port = proxy.server_address[1]
    spy = SpyBackend()
    with TargetServer() as target:
        results = await run_checks(
            [
                CheckSpec(
                    "literal",
                    "GET",
                    target.url("/ok"),
                    proxy=f"http://127.0.0.1:{proxy_port}",
                ),
                CheckSpec(
                    "by name",
                    "GET",
                    target.url("/ok"),
                    proxy=f"http://localhost:{proxy_port}",
                ),
            ],
            # The target is allowed, the proxy's port is not.
            policy=allowing(target.port),
            inner_backend=spy,
        )
        assert target.paths() == []
    for result in results:
        assert result.error is not None
        assert result.error.startswith("blocked by address policy (loopback)"), result.error
    assert proxy.seen == []
    assert spy.attempts == []


# --- TCP -----------------------------------------------------------------------------------------


class _LineServer:
    """A TCP server on 127.0.0.1 that answers "PING" with "+PONG" (like Redis) and anything
    else with "-ERR"."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    line = conn.recv(1024)
                except OSError:
                    continue
                self.lines.append(line)
                conn.sendall(b"+PONG\r\n" if line.strip() == b"PING" else b"-ERR\r\n")

    def __enter__(self) -> _LineServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


@pytest.mark.anyio
async def test_tcp_probe_connects_sends_a_line_and_matches_the_reply() -> None:
    with _LineServer() as server:
        results = await run_checks(
            [
                CheckSpec(
                    "pong",
                    "",
                    f"tcp://127.0.0.1:{server.port}",
                    body="PING",
                    probe="tcp",
                    expect=r"^\+PONG",
                    assertions=[{"type": "latency", "max_ms": 2000}],
                ),
                CheckSpec(
                    "wrong",
                    "",
                    f"tcp://127.0.0.1:{server.port}",
                    body="HELLO",
                    probe="tcp",
                    expect=r"^\+PONG",
                ),
            ],
            policy=allowing(server.port),
        )
    pong, wrong = results
    assert pong.passed, pong.error or pong.failures
    assert pong.latency_ms is not None and pong.latency_ms > 0
    assert pong.excerpt.startswith("+PONG")
    assert not wrong.passed
    assert wrong.failures[0].message == "the reply did not match '^\\\\+PONG'"
    assert server.lines == [b"PING\n", b"HELLO\n"]


@pytest.mark.anyio
async def test_tcp_probe_of_a_closed_port_fails_to_connect() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    [result] = await run_checks(
        [CheckSpec("closed", "", f"tcp://127.0.0.1:{port}", probe="tcp", timeout_s=2)],
        policy=allowing(port),
    )
    assert not result.passed
    assert result.error is not None and result.error.startswith("connection failed")


@pytest.mark.anyio
async def test_tcp_probe_to_a_refused_address_never_connects() -> None:
    spy = SpyBackend()
    with _LineServer() as server:
        results = await run_checks(
            [
                CheckSpec("loopback", "", f"tcp://127.0.0.1:{server.port}", probe="tcp"),
                CheckSpec("by name", "", f"tcp://localhost:{server.port}", probe="tcp"),
                CheckSpec("metadata", "", "tcp://169.254.169.254:80", probe="tcp"),
                CheckSpec("hex", "", f"tcp://0x7f000001:{server.port}", probe="tcp"),
            ],
            policy=AddressPolicy(),
            inner_backend=spy,
        )
        await asyncio.sleep(0.1)
        assert server.lines == []
    assert [r.error.split(":")[0] for r in results] == [
        "blocked by address policy (loopback)",
        "blocked by address policy (loopback)",
        "blocked by address policy (link-local)",
        "blocked by address policy (loopback)",
    ]
    assert spy.attempts == []
