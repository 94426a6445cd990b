"""The engine's HTTP/1.1 client (monitoring.lib.http1) against servers on 127.0.0.1.

Network rule: every connection goes to a server this module starts on 127.0.0.1. Requests that
name another address go through a SpyBackend dialer, which records what the guard let through
and itself refuses anything that is not loopback, so the tests prove the guard refused them
before any socket was opened, and a broken guard fails a test instead of reaching the network.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest

from monitoring.lib import http1
from monitoring.lib.engine import CheckRunner, CheckSpec, run_checks
from monitoring.lib.ssrf import AddressPolicy, SSRFBlocked
from monitoring.lib.testing import SpyBackend, TargetServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer(
        {"/chunked": _chunked, "/closes": _answers_then_closes, "/nul": _nul, "/see": _see}
    ) as server:
        yield server


@pytest.fixture
def other_target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


def allowing(*ports: int) -> AddressPolicy:
    return AddressPolicy(allow=[f"127.0.0.1:{p}" for p in ports])


def _chunked(handler: Any, query: dict[str, str]) -> None:
    # Chunks of odd sizes, an extension and a trailer, each written (and flushed) on its own,
    # so the client sees them in separate segments as well as in one.
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    size = int(query.get("kb", "0")) * 1024
    parts = [b'{"status":', b' "ok", "pad": "', b"x" * size, b'"}']
    for index, part in enumerate(parts):
        if not part:
            continue
        extension = b";name=value" if index == 1 else b""
        handler.wfile.write(b"%x%s\r\n%s\r\n" % (len(part), extension, part))
        handler.wfile.flush()
    handler.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
    handler.wfile.flush()


def _answers_then_closes(handler: Any, query: dict[str, str]) -> None:
    # A complete keep-alive answer (no "Connection: close"), then the server hangs up: what an
    # idle-timeout on the service's side does to a pooled connection.
    handler._send(200, b"bye")
    handler.close_connection = True


def _nul(handler: Any, query: dict[str, str]) -> None:
    # NUL as a JSON escape (?json=1) or as a raw byte of a text body.
    if query.get("json"):
        handler._send(200, b'{"status": "ok\\u0000"}', "application/json")
    else:
        handler._send(200, b"ok\x00tail")


def _see(handler: Any, query: dict[str, str]) -> None:
    handler._send(303, b"", headers={"Location": query.get("to", "/echo")})


# --- a raw server for what TargetServer cannot do ------------------------------------------


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class ThenClose(bytes):
    """An answer after which the raw server closes the connection."""


class RawServer:
    """An asyncio server on 127.0.0.1 that answers requests from a script, one entry per request
    in the order they arrive (on whichever connection): bytes to send, `ThenClose(bytes)` to
    send and hang up, None to hang up without answering; "200 ok" once the script runs out."""

    def __init__(self, script: list[bytes | None]) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                answer = self.script.pop(0) if self.script else OK
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if isinstance(answer, ThenClose):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def within(seconds: float, awaitable: Awaitable[Any]) -> Any:
    """Fail (instead of hanging the suite) if a request never finishes."""
    async with asyncio.timeout(seconds):
        return await awaitable


# --- framing -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_chunked_body_is_decoded_and_the_connection_kept(target: TargetServer) -> None:
    async with http1.Http1Client(allowing(target.port)) as client:
        first = await client.request("GET", target.url("/chunked"))
        second = await client.request("GET", target.url("/chunked?kb=3"))
    assert first.status_code == 200
    assert first.body == b'{"status": "ok", "pad": ""}'
    assert second.body == b'{"status": "ok", "pad": "' + b"x" * 3072 + b'"}'
    assert first.headers["transfer-encoding"] == "chunked"
    assert len(target.connections()) == 1


@pytest.mark.anyio
async def test_chunked_body_is_capped_and_its_connection_dropped(target: TargetServer) -> None:
    async with http1.Http1Client(allowing(target.port)) as client:
        reply = await client.request("GET", target.url("/chunked?kb=64"), max_body=1000)
        assert reply.truncated and len(reply.body) == 1000
        assert reply.body.startswith(b'{"status": "ok", "pad": "xxx')
        assert client.idle_connections() == 0
        after = await client.request("GET", target.url("/ok"))
    assert after.status_code == 200
    assert client.connections_opened == 2


@pytest.mark.anyio
async def test_content_length_body_is_capped_and_its_connection_dropped(
    target: TargetServer,
) -> None:
    async with http1.Http1Client(allowing(target.port)) as client:
        exact = await client.request("GET", target.url("/big?kb=1"), max_body=1024)
        capped = await client.request("GET", target.url("/big?kb=100"), max_body=10 * 1024)
        assert client.idle_connections() == 0
    assert not exact.truncated and len(exact.body) == 1024
    assert capped.truncated and len(capped.body) == 10 * 1024
    assert capped.body.startswith(b"BEGINxx")
    # The exact fit stayed reusable; the capped answer cost its connection.
    assert client.connections_opened == 1
    assert len(target.connections()) == 1


@pytest.mark.anyio
async def test_head_and_no_content_answers_have_no_body(target: TargetServer) -> None:
    async with RawServer([b"HTTP/1.1 204 No Content\r\n\r\n", OK]) as raw:
        async with http1.Http1Client(allowing(target.port, raw.port)) as client:
            head = await within(5, client.request("HEAD", target.url("/ok")))
            after_head = await within(5, client.request("GET", target.url("/ok")))
            empty = await within(5, client.request("GET", raw.url("/a")))
            after_empty = await within(5, client.request("GET", raw.url("/b")))
    assert head.status_code == 200 and head.body == b""
    assert head.headers["content-length"] == str(len(after_head.body))
    assert empty.status_code == 204 and empty.body == b""
    assert after_empty.body == b"ok"
    assert len(target.connections()) == 1 and raw.connections == 1


@pytest.mark.anyio
async def test_interim_answers_are_skipped_and_a_body_until_close_is_read() -> None:
    script: list[bytes | None] = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
        ThenClose(b"HTTP/1.0 200 OK\r\n\r\nuntil the end"),
    ]
    async with RawServer(script) as raw:
        async with http1.Http1Client(allowing(raw.port)) as client:
            interim = await within(5, client.request("GET", raw.url("/a")))
            until_close = await within(5, client.request("GET", raw.url("/b")))
            assert client.idle_connections() == 0
    assert (interim.status_code, interim.body) == (200, b"final")
    assert until_close.body == b"until the end"


@pytest.mark.anyio
async def test_old_fashioned_but_valid_answers_are_understood() -> None:
    script: list[bytes | None] = [
        # A folded header line (obsolete, still sent by some old servers) and a length said twice.
        b"HTTP/1.1 200 OK\r\nX-Long: part one\r\n  part two\r\nContent-Length: 2, 2\r\n\r\nok",
        OK,
    ]
    async with RawServer(script) as raw:
        async with http1.Http1Client(allowing(raw.port)) as client:
            folded = await within(5, client.request("GET", raw.url("/a")))
            after = await within(5, client.request("GET", raw.url("/b")))
    assert folded.headers["x-long"] == "part one part two" and folded.body == b"ok"
    assert after.body == b"ok" and raw.connections == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header Line\r\n\r\n",
    ],
)
async def test_malformed_answers_fail_the_request(answer: bytes) -> None:
    async with RawServer([answer]) as raw:
        async with http1.Http1Client(allowing(raw.port)) as client:
            with pytest.raises(http1.RemoteProtocolError):
                await within(5, client.request("GET", raw.url()))
            assert client.idle_connections() == 0


# --- keep-alive ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sequential_requests_share_one_keep_alive_connection(target: TargetServer) -> None:
    async with http1.Http1Client(allowing(target.port)) as client:
        for _ in range(10):
            assert (await client.request("GET", target.url("/ok"))).status_code == 200
    assert len(target.requests) == 10
    assert len(target.connections()) == 1
    assert client.connections_opened == 1


@pytest.mark.anyio
async def test_idle_pool_per_origin_is_bounded(target: TargetServer) -> None:
    async with http1.Http1Client(allowing(target.port), max_idle_per_origin=2) as client:
        replies = await asyncio.gather(
            *(client.request("GET", target.url("/slow?ms=100")) for _ in range(5))
        )
        assert all(r.status_code == 200 for r in replies)
        assert client.idle_connections() == 2


@pytest.mark.anyio
async def test_idle_connections_expire(target: TargetServer) -> None:
    async with http1.Http1Client(allowing(target.port), keepalive_expiry=0.05) as client:
        await client.request("GET", target.url("/ok"))
        await asyncio.sleep(0.1)
        await client.request("GET", target.url("/ok"))
    assert client.connections_opened == 2


@pytest.mark.anyio
async def test_connection_the_server_closed_while_idle_is_not_reused(
    target: TargetServer,
) -> None:
    async with http1.Http1Client(allowing(target.port)) as client:
        first = await client.request("GET", target.url("/closes"))
        # Let the server's FIN arrive: the pooled connection must be seen as closed.
        await asyncio.sleep(0.2)
        second = await within(5, client.request("GET", target.url("/ok")))
    assert first.body == b"bye" and second.status_code == 200
    assert client.connections_opened == 2
    assert len(target.connections()) == 2


@pytest.mark.anyio
async def test_stale_connection_is_retried_once_for_a_get() -> None:
    # The second request arrives on the pooled connection and the server hangs up without
    # answering, as one whose keep-alive timeout fired at that moment would.
    async with RawServer([OK, None]) as raw:
        async with http1.Http1Client(allowing(raw.port)) as client:
            assert (await within(5, client.request("GET", raw.url("/a")))).body == b"ok"
            again = await within(5, client.request("GET", raw.url("/b")))
    assert again.status_code == 200 and again.body == b"ok"
    assert raw.connections == 2
    assert [r.split(b" ")[1] for r in raw.requests] == [b"/a", b"/b", b"/b"]


@pytest.mark.anyio
async def test_stale_connection_is_reported_not_repeated_for_a_post() -> None:
    async with RawServer([OK, None]) as raw:
        async with http1.Http1Client(allowing(raw.port)) as client:
            await within(5, client.request("GET", raw.url("/a")))
            started = time.perf_counter()
            with pytest.raises(http1.ServerDisconnected, match="not sent twice"):
                await within(5, client.request("POST", raw.url("/b"), body=b"once"))
            assert time.perf_counter() - started < 2
    assert [r.split(b" ")[1] for r in raw.requests] == [b"/a", b"/b"]


@pytest.mark.anyio
async def test_a_fresh_connection_closed_before_answering_is_not_retried() -> None:
    async with RawServer([None, None]) as raw:
        async with http1.Http1Client(allowing(raw.port)) as client:
            with pytest.raises(http1.ServerDisconnected, match="before it answered"):
                await within(5, client.request("GET", raw.url("/a")))
    assert raw.connections == 1


@pytest.mark.anyio
async def test_connection_closed_mid_answer_is_an_error_not_a_short_body() -> None:
    cut = ThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
    async with RawServer([cut]) as raw:
        async with http1.Http1Client(allowing(raw.port)) as client:
            with pytest.raises(http1.ServerDisconnected, match="middle of its answer"):
                await within(5, client.request("GET", raw.url("/a")))
    assert raw.connections == 1


# --- timeouts ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_dripping_target_is_cut_off_by_the_whole_exchange_timeout(
    target: TargetServer,
) -> None:
    async with http1.Http1Client(allowing(target.port)) as client:
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            await client.request("GET", target.url("/drip?n=50&interval=0.1"), timeout=0.5)
        assert 0.45 <= time.perf_counter() - started < 1.2
        # The half-read connection was dropped, not pooled; the next request gets a new one.
        assert client.idle_connections() == 0
        after = await within(5, client.request("GET", target.url("/ok")))
    assert after.status_code == 200
    assert client.connections_opened == 2


# --- what is sent --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_method_headers_and_body_are_sent(target: TargetServer) -> None:
    async with http1.Http1Client(allowing(target.port)) as client:
        reply = await client.request(
            "post", target.url("/echo?x=1"), headers={"X-Probe": "rc", "accept": "a/b"}, body="hé"
        )
        empty = await client.request("PUT", target.url("/echo"))
        # A check's own framing header would contradict the body actually sent.
        framed = await client.request(
            "POST", target.url("/echo"), headers={"Content-Length": "99"}, body=b"four"
        )
    assert reply.status_code == 200 and framed.status_code == 200
    [request, put, own_length] = target.requests
    assert own_length.headers["Content-Length"] == "4" and own_length.body == b"four"
    assert request.method == "POST" and request.path == "/echo"
    assert request.headers["X-Probe"] == "rc"
    assert request.headers["accept"] == "a/b"  # replaces the default, not a second header
    assert request.headers["Host"] == f"127.0.0.1:{target.port}"
    assert request.headers["User-Agent"] == http1.USER_AGENT
    assert request.headers["Accept-Encoding"] == "identity"
    assert request.body == "hé".encode()
    assert put.headers["Content-Length"] == "0"
    assert empty.status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "problem"),
    [({"X-Bad": "a\r\nInjected: 1"}, "line break"), ({"Bad Name": "x"}, "not a header name")],
)
async def test_headers_that_would_break_the_request_are_refused(
    target: TargetServer, headers: dict[str, str], problem: str
) -> None:
    async with http1.Http1Client(allowing(target.port)) as client:
        with pytest.raises(http1.InvalidRequest, match=problem):
            await client.request("GET", target.url("/ok"), headers=headers)
    assert target.requests == []


@pytest.mark.anyio
async def test_no_cookies_are_kept_between_requests(target: TargetServer) -> None:
    async with http1.Http1Client(allowing(target.port)) as client:
        first = await client.request("GET", target.url("/cookie"))
        second = await client.request("GET", target.url("/echo"))
    assert first.headers["set-cookie"].startswith("session=")
    assert '"cookie": null' in second.body.decode()


# --- redirects and the guard ---------------------------------------------------------------


@pytest.mark.anyio
async def test_redirects_are_followed_only_when_asked(target: TargetServer) -> None:
    url = target.url("/redirect?to=/ok")
    async with http1.Http1Client(allowing(target.port)) as client:
        plain = await client.request("GET", url)
        followed = await client.request("GET", url, follow_redirects=True)
    assert plain.status_code == 302 and plain.headers["location"] == "/ok"
    assert followed.status_code == 200 and followed.url == target.url("/ok")
    assert target.paths() == ["/redirect", "/redirect", "/ok"]


@pytest.mark.anyio
async def test_see_other_turns_a_post_into_a_get_without_its_body(target: TargetServer) -> None:
    async with http1.Http1Client(allowing(target.port)) as client:
        reply = await client.request(
            "POST", target.url("/see"), body=b"payload", follow_redirects=True
        )
    assert '"method": "GET"' in reply.body.decode()
    [post, get] = target.requests
    assert (post.method, post.body) == ("POST", b"payload")
    assert (get.method, get.body) == ("GET", b"")
    assert "Content-Length" not in get.headers


@pytest.mark.anyio
async def test_authorization_is_not_carried_to_another_origin(
    target: TargetServer, other_target: TargetServer
) -> None:
    url = target.url(f"/redirect?to={other_target.url('/echo')}")
    async with http1.Http1Client(allowing(target.port, other_target.port)) as client:
        await client.request(
            "GET", url, headers={"Authorization": "Bearer s3cret"}, follow_redirects=True
        )
    assert target.requests[0].headers["Authorization"] == "Bearer s3cret"
    assert "Authorization" not in other_target.requests[0].headers


@pytest.mark.anyio
async def test_a_redirect_loop_stops() -> None:
    loop = b"HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n"
    async with RawServer([loop] * 10) as raw:
        async with http1.Http1Client(allowing(raw.port), max_redirects=3) as client:
            with pytest.raises(http1.TooManyRedirects):
                await within(5, client.request("GET", raw.url("/start"), follow_redirects=True))
    # The first request and three redirects; the fourth redirect is not followed.
    assert len(raw.requests) == 4 and raw.connections == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("to", "rule"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.1/admin", "private"),
        ("http://0x7f000001:{other}/ok", "loopback"),
        ("http://[::1]:{other}/ok", "loopback"),
        ("http://127.0.0.1:{other}/ok", "loopback"),
    ],
)
async def test_a_redirect_to_a_refused_address_is_refused_without_a_connection(
    target: TargetServer, other_target: TargetServer, to: str, rule: str
) -> None:
    spy = SpyBackend()
    location = to.format(other=other_target.port)
    async with http1.Http1Client(allowing(target.port), dialer=spy) as client:
        with pytest.raises(SSRFBlocked) as blocked:
            await client.request(
                "GET", target.url(f"/redirect?to={location}"), follow_redirects=True
            )
    assert blocked.value.decision.rule == rule
    # The guard let exactly one connection through: the allowed first hop.
    assert spy.attempts == [("127.0.0.1", target.port)]
    assert other_target.requests == []


@pytest.mark.anyio
async def test_names_are_resolved_and_judged_per_connection(target: TargetServer) -> None:
    spy = SpyBackend()
    answers = iter([["127.0.0.1"], ["127.0.0.1", "10.0.0.5"]])
    policy = AddressPolicy(
        allow=[f"127.0.0.1:{target.port}"], resolver=lambda host, port: next(answers)
    )
    async with http1.Http1Client(policy, dialer=spy) as client:
        reply = await client.request("GET", f"http://status.test:{target.port}/echo")
        assert '"host": "status.test:' in reply.body.decode()
        # The pooled connection serves the next request without a new lookup...
        await client.request("GET", f"http://status.test:{target.port}/ok")
        await client.aclose()
    # ...and a new connection looks the name up again, and refuses an answer with a private
    # address in it (DNS rebinding), before dialling.
    async with http1.Http1Client(policy, dialer=spy) as client:
        with pytest.raises(SSRFBlocked) as blocked:
            await client.request("GET", f"http://status.test:{target.port}/ok")
    assert blocked.value.decision.rule == "private"
    assert spy.attempts == [("127.0.0.1", target.port)]


@pytest.mark.anyio
async def test_a_refused_port_is_a_connect_error() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with http1.Http1Client(allowing(port)) as client:
        with pytest.raises(http1.ConnectError):
            await within(5, client.request("GET", f"http://127.0.0.1:{port}/"))


# --- policies and pools --------------------------------------------------------------------


@pytest.mark.anyio
async def test_pooled_connections_never_serve_another_policy(target: TargetServer) -> None:
    spy = SpyBackend()
    lenient = AddressPolicy(allow=["127.0.0.1"])
    strict = AddressPolicy()
    narrow = allowing(target.port)
    specs = [CheckSpec("lenient", "GET", target.url("/ok"))]
    async with CheckRunner(inner_backend=spy) as runner:
        assert (await runner.run(specs[0], lenient)).passed
        # The lenient policy's keep-alive connection to this origin is idle in its pool.
        assert runner.http1_client_for(lenient).idle_connections() == 1
        refused = await runner.run(specs[0], strict)
        also_allowed = await runner.run(specs[0], narrow)
        again = await runner.run(specs[0], AddressPolicy(allow=["127.0.0.1"]))
    assert refused.error is not None and "(loopback)" in refused.error
    assert also_allowed.passed and again.passed
    # One connection per policy that allows the target; the equal policy reused its own.
    assert spy.attempts == [("127.0.0.1", target.port)] * 2
    assert len(target.connections()) == 2
    assert target.paths() == ["/ok"] * 3


@pytest.mark.anyio
async def test_engine_reports_a_stale_post_and_retries_a_stale_get() -> None:
    # Each stale connection is the one the previous retry opened.
    async with RawServer([OK, None, OK, None, OK, None]) as raw:
        policy = allowing(raw.port)
        async with CheckRunner() as runner:
            first = await runner.run(CheckSpec("a", "GET", raw.url("/a"), timeout_s=5), policy)
            retried = await runner.run(CheckSpec("b", "GET", raw.url("/b"), timeout_s=5), policy)
            third = await runner.run(CheckSpec("c", "GET", raw.url("/c"), timeout_s=5), policy)
            post = await runner.run(
                CheckSpec("d", "POST", raw.url("/d"), body="x", timeout_s=5), policy
            )
    assert first.passed and retried.passed and third.passed
    assert not post.passed
    assert post.error is not None and post.error.startswith("ServerDisconnected:")


# --- the engine stores what it saw ---------------------------------------------------------


@pytest.mark.anyio
async def test_engine_sees_nul_in_bodies_and_keeps_it_in_the_excerpt(
    target: TargetServer,
) -> None:
    [as_json, as_text] = await run_checks(
        [
            CheckSpec(
                "json",
                "GET",
                target.url("/nul?json=1"),
                assertions=[{"type": "json", "path": "$.status", "value": "ok\u0000"}],
            ),
            CheckSpec(
                "text",
                "GET",
                target.url("/nul"),
                assertions=[{"type": "body_contains", "value": "ok\u0000tail"}],
            ),
        ],
        policy=allowing(target.port),
    )
    assert as_json.passed and as_text.passed, (as_json.failures, as_text.failures)
    assert as_text.excerpt == "ok\x00tail"


# --- https ---------------------------------------------------------------------------------


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "release-center test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("tls.test")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    cert_path, key_path = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    hosts: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                hosts.append(head)
                body = b'{"status": "ok", "tls": true}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1], cert_path
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.anyio
async def test_https_with_a_trusted_certificate(tls_server: tuple[int, Path]) -> None:
    port, cert_path = tls_server
    policy = AddressPolicy(
        allow=[f"127.0.0.1:{port}", f"tls.test:{port}"],
        resolver=lambda host, p: ["127.0.0.1"],
    )
    async with http1.Http1Client(policy, verify=str(cert_path)) as client:
        by_ip = await within(5, client.request("GET", f"https://127.0.0.1:{port}/health"))
        by_name = await within(5, client.request("GET", f"https://tls.test:{port}/health"))
        again = await within(5, client.request("GET", f"https://tls.test:{port}/health"))
    assert by_ip.body == b'{"status": "ok", "tls": true}'
    assert by_name.status_code == again.status_code == 200
    assert client.connections_opened == 2  # one per origin; the second by_name reused its own


@pytest.mark.anyio
async def test_https_with_an_untrusted_certificate_fails_the_check(
    tls_server: tuple[int, Path],
) -> None:
    port, _ = tls_server
    [result] = await run_checks(
        [CheckSpec("tls", "GET", f"https://127.0.0.1:{port}/health", timeout_s=5)],
        policy=allowing(port),
    )
    assert not result.passed
    assert result.error is not None
    assert result.error.startswith("connection failed: TLS certificate not trusted")


def test_the_default_tls_context_verifies_and_speaks_http1() -> None:
    context = http1.default_ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context is http1.default_ssl_context()
