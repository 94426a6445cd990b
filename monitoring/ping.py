"""The ping endpoint of heartbeat checks, as a small ASGI app served before Django.

    GET|POST /ping/<uuid>          the job ran (the body's first 10 kB become the excerpt)
    GET|POST /ping/<uuid>/start    the job started (its next ping measures how long it took)
    GET|POST /ping/<uuid>/fail     the job failed

No login: the uuid is the secret. Answers are plain text: 200 "OK", 404 for a key that is not a
heartbeat check's (whatever the reason, after the same work as a hit, so timing tells nothing),
429 past the per-check rate, 405 for other methods, 413 past MAX_BODY_BYTES.

Why not a Django view: a ping needs none of the middleware (sessions, CSRF, auth, templates),
and a web process serves Django's sync views on one thread, where a burst of pings would queue
behind page loads and each other. Here pings from concurrent requests are gathered into batches
while the previous batch is being written. A request waits only for `heartbeats.receive`: one
Redis round trip (the rate limit) and one statement that finds the keys and puts the accepted
pings into the ping inbox. Recording them (results, rollups, state changes, notifications:
about ten statements and most of the CPU a ping costs) is `heartbeats.drain`, run by a worker
(`tasks.record_ping_inbox`, queued at most every DRAIN_PAUSE_SECONDS while pings arrive) for
everything that arrived meanwhile: in the web process it took a third of the one core its GIL
allows and held the answers up (bench/bench_pings.py). Beat drains too, before it looks for
late checks, so a ping is never lost with a web process that stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import close_old_connections
from django.utils import timezone

from .heartbeats import EXCERPT_BYTES, KINDS, Ping, drain, receive

logger = logging.getLogger(__name__)

PREFIX = "/ping/"
# A body is read (and all but its first 10 kB dropped as it arrives) up to this size; past it
# the connection is answered 413 and nothing is recorded.
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_BATCH = 500
# Between two drains of the inbox queued while pings keep coming: fewer, larger drains cost
# less per ping (10 pings 2.6 ms each, 1,000 pings 0.12-0.2 ms each).
DRAIN_PAUSE_SECONDS = 0.25

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

REASONS = {
    200: b"OK\n",
    404: b"not found\n",
    405: b"use GET or POST\n",
    413: b"body too large\n",
    429: b"rate limited\n",
    503: b"could not record the ping, try again\n",
}


def _receive_batch(pings: list[Ping]) -> list[int]:
    # This thread keeps its own database connection between batches, like a request thread.
    close_old_connections()
    try:
        return receive(pings)
    finally:
        close_old_connections()


def _drain_inbox() -> int:
    close_old_connections()
    try:
        return drain()
    finally:
        close_old_connections()


def _queue_drain() -> None:
    from .tasks import record_ping_inbox

    try:
        record_ping_inbox.delay()
    except Exception:
        # No broker: record here rather than leave the pings to beat.
        logger.exception("could not queue the recording of pings; recording them here")
        _drain_inbox()


class _Batcher:
    """Gathers pings from concurrent requests; one batch is taken in at a time, in one thread;
    another queues the inbox's recording, while the next batches are taken in."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[tuple[Ping, asyncio.Future[int]]] = []
        self.writer: asyncio.Task[None] | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rc-pings")
        self.drainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rc-pings-drain")
        self.draining: asyncio.Task[None] | None = None
        self.drain_again = False
        # How long recent batches with a known key took: a batch of unknown keys only is held
        # that long, so a 404 takes as long as a hit.
        self.hit_seconds = 0.005

    async def submit(self, ping: Ping) -> int:
        future: asyncio.Future[int] = self.loop.create_future()
        self.pending.append((ping, future))
        if self.writer is None or self.writer.done():
            self.writer = self.loop.create_task(self._write())
        return await future

    async def _write(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
            started = time.perf_counter()
            try:
                statuses = await self.loop.run_in_executor(
                    self.executor, _receive_batch, [ping for ping, _ in batch]
                )
            except Exception:
                logger.exception("recording %d pings failed", len(batch))
                statuses = [503] * len(batch)
            took = time.perf_counter() - started
            if 200 in statuses:
                self.hit_seconds = 0.8 * self.hit_seconds + 0.2 * took
            elif took < self.hit_seconds:
                await asyncio.sleep(self.hit_seconds - took)
            for (_, future), status in zip(batch, statuses, strict=True):
                if not future.done():
                    future.set_result(status)
            if 200 in statuses:
                self._start_drain()

    def _start_drain(self) -> None:
        if self.draining is None or self.draining.done():
            self.draining = self.loop.create_task(self._drain())
        else:
            self.drain_again = True  # what arrived after the last drain was queued

    async def _drain(self) -> None:
        self.drain_again = True
        first = True
        while self.drain_again:
            if not first:
                await asyncio.sleep(DRAIN_PAUSE_SECONDS)
            first = False
            self.drain_again = False
            try:
                await self.loop.run_in_executor(self.drainer, _queue_drain)
            except Exception:
                # The pings stay in the inbox; the next drain (or beat's) records them.
                logger.exception("recording the ping inbox failed")
                return

    async def settled(self) -> None:
        """Wait until every ping taken in so far has been recorded (here, not by a worker)."""
        while True:
            tasks = [t for t in (self.writer, self.draining) if t is not None and not t.done()]
            if not tasks:
                break
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.loop.run_in_executor(self.drainer, _drain_inbox)


_batchers: dict[asyncio.AbstractEventLoop, _Batcher] = {}


def _batcher() -> _Batcher:
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        for old in [other for other in _batchers if other.is_closed()]:
            gone = _batchers.pop(old)
            gone.executor.shutdown(wait=False)
            gone.drainer.shutdown(wait=False)
        batcher = _batchers[loop] = _Batcher(loop)
    return batcher


async def settled() -> None:
    """Record the pings this process has answered, now, without waiting for a worker (tests)."""
    batcher = _batchers.get(asyncio.get_running_loop())
    if batcher is not None:
        await batcher.settled()


def parse_path(path: str) -> tuple[uuid.UUID | None, str] | None:
    """(key, kind) of a ping path; key None when it is not a uuid (answered as unknown); None
    when the path is not a ping at all."""
    parts = path[len(PREFIX) :].rstrip("/").split("/")
    if len(parts) == 1:
        kind = "success"
    elif len(parts) == 2 and parts[1] in KINDS:
        kind = parts[1]
    else:
        return None
    try:
        return uuid.UUID(parts[0]), kind
    except ValueError:
        return None, kind


async def _respond(send: Send, status: int, method: str) -> None:
    body = REASONS[status]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
                *([(b"allow", b"GET, POST, HEAD")] if status == 405 else []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    method = scope["method"]
    if method not in ("GET", "POST", "HEAD"):
        await _respond(send, 405, method)
        return
    kept = bytearray()
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            await _respond(send, 413, method)
            return
        if len(kept) <= EXCERPT_BYTES:
            kept += chunk[: EXCERPT_BYTES + 1 - len(kept)]
        more = message.get("more_body", False)
    received_at = timezone.now()
    parsed = parse_path(scope["path"])
    key, kind = parsed if parsed is not None else (None, "success")
    ping = Ping(
        key=key,
        kind=kind,
        body=bytes(kept[:EXCERPT_BYTES]),
        received_at=received_at,
        cut=len(kept) > EXCERPT_BYTES,
    )
    # Unknown and malformed keys take the same path as a hit, so the answer's timing does not
    # tell a guesser which keys exist.
    status = await _batcher().submit(ping)
    await _respond(send, status, method)
