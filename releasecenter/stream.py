"""GET /events/stream?topic=…: Server-Sent Events, served by an async view under uvicorn.

The stream first sends every event of the topic after the client's Last-Event-ID (the header a
browser sends on reconnect, or ?last_event_id= on the first connect) from the database, in the
order their transactions committed (AuditEvent.stream_position), then waits for a wake-up and
reads again. Events always come from the database, so a missed wake-up delays an event, never
loses it.

Wake-ups come from one ``WakeupHub`` per web process: a single Redis pattern subscription on every
topic's channel, which fans each message out to the streams of that topic open in the process. A
connection and a subscription per stream would cap a process at the connections Redis and the
event loop can hold (a few dozen streams); with the hub a thousand streams share one. The hub
also keeps time for all of them: a safety re-read every SAFETY_SECONDS while Redis is there (in
case a wake-up was lost), polling every EVENTS_POLL_SECONDS while it is not (or when no Redis is
configured), and a wake-up of every stream when its subscription comes back. Streams of one topic
woken together share one database read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.http import Http404, HttpResponse, StreamingHttpResponse

from . import events, metrics
from .access import membership_for
from .validation import ascii_int

logger = logging.getLogger(__name__)

# With Redis, re-read the database at least this often anyway, in case a wake-up was lost.
SAFETY_SECONDS = 5.0
BATCH = 500
# Reconnect to Redis after a lost subscription, backing off up to this long.
RECONNECT_MAX_SECONDS = 5.0
# Many streams of one person check access at the same moment; one answer serves them this long.
ACCESS_MEMO_SECONDS = 1.0


def _parse_last_id(request) -> int:  # noqa: ANN001
    raw = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id") or "0"
    return ascii_int(raw) or 0


def _authorise(user, topic: str) -> bool:  # noqa: ANN001
    project_id = events.topic_project_id(topic)
    return project_id is not None and membership_for(user, project_id) is not None


def _frame(event: dict) -> str:
    # No "event:" field: browsers deliver typed events only to listeners of that type, and one
    # onmessage handler that reads the verb from the data is simpler for every page.
    # The SSE id is the stream position, which the browser sends back as Last-Event-ID.
    return f"id: {event['position']}\ndata: {json.dumps(event)}\n\n"


def _read_frames(topic: str, position: int) -> tuple[bytes, int, int]:
    """The frames after a position, encoded once for every stream that shares the read (a str
    would be encoded again per stream, after a look-up of the response's charset)."""
    batch, position = events.read_after(topic, position, BATCH)
    return "".join(_frame(event) for event in batch).encode(), len(batch), position


class WakeupHub:
    """The wake-ups of one web process (one event loop): one Redis pattern subscription, the
    streams waiting per topic, the shared timer, and reads shared between streams."""

    def __init__(self, redis_url: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.redis_url = redis_url
        self.prefix = settings.EVENTS_CHANNEL_PREFIX
        self.connected = False
        self._waiters: dict[str, set[asyncio.Event]] = {}
        # Bumped by every wake-up: a read may serve a stream only if it started after the
        # wake-up the stream is answering, so it cannot miss the event that caused it.
        self._epoch = 0
        self._reads: dict[tuple[str, int, int], asyncio.Future] = {}
        self._access: dict[tuple[int, str], tuple[float, asyncio.Future]] = {}
        self._fetch = sync_to_async(_read_frames, thread_sensitive=False)
        self._authorise = sync_to_async(_authorise, thread_sensitive=False)
        self._tasks = [self.loop.create_task(self._sweep())]
        if redis_url:
            self._tasks.append(self.loop.create_task(self._listen()))

    def watch(self, topic: str) -> asyncio.Event:
        """Register a stream's interest before its first read, so no wake-up falls between."""
        waiter = asyncio.Event()
        self._waiters.setdefault(topic, set()).add(waiter)
        metrics.EVENT_STREAMS.inc()
        return waiter

    def unwatch(self, topic: str, waiter: asyncio.Event) -> None:
        waiters = self._waiters.get(topic)
        if waiters is not None and waiter in waiters:
            waiters.discard(waiter)
            metrics.EVENT_STREAMS.dec()
            if not waiters:
                del self._waiters[topic]

    def _next_epoch(self) -> None:
        self._epoch += 1
        # Reads of earlier epochs are never asked for again (their streams hold them).
        self._reads.clear()

    def wake(self, topic: str) -> None:
        self._next_epoch()
        for waiter in self._waiters.get(topic, ()):
            waiter.set()

    def wake_all(self) -> None:
        self._next_epoch()
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.set()

    async def read(self, topic: str, position: int) -> tuple[bytes, int, int]:
        """The frames of a topic after a position, read once for all streams asking together."""
        key = (topic, position, self._epoch)
        future = self._reads.get(key)
        if future is None:
            future = asyncio.ensure_future(self._fetch(topic, position))
            self._reads[key] = future
        if future.done():
            return future.result()
        # One stream closing must not cancel the read the others wait for.
        return await asyncio.shield(future)

    async def may_see(self, user, topic: str) -> bool:  # noqa: ANN001
        """Whether the user may still see the topic; one question to the database answers all
        the streams of one person and topic that ask within ACCESS_MEMO_SECONDS."""
        key = (user.pk, topic)
        memo = self._access.get(key)
        if memo is None or time.monotonic() - memo[0] >= ACCESS_MEMO_SECONDS:
            memo = (time.monotonic(), asyncio.ensure_future(self._authorise(user, topic)))
            self._access[key] = memo
        if memo[1].done():
            return memo[1].result()
        return await asyncio.shield(memo[1])

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SAFETY_SECONDS if self.connected else settings.EVENTS_POLL_SECONDS)
            self.wake_all()
            now = time.monotonic()
            for key, (at, _allowed) in list(self._access.items()):
                if now - at >= ACCESS_MEMO_SECONDS:
                    del self._access[key]

    async def _listen(self) -> None:
        backoff = 0.5
        while True:
            client = aioredis.Redis.from_url(
                self.redis_url, socket_connect_timeout=2, health_check_interval=SAFETY_SECONDS
            )
            pubsub = client.pubsub()
            try:
                await pubsub.psubscribe(f"{self.prefix}*")
                while True:
                    message = await pubsub.get_message(timeout=SAFETY_SECONDS)
                    if message is None:
                        continue
                    if message["type"] == "psubscribe":
                        # Subscribed: whatever was published before now is in the database.
                        self.connected = True
                        backoff = 0.5
                        logger.info("event streams: subscribed to wake-ups")
                        self.wake_all()
                    elif message["type"] == "pmessage":
                        self.wake(message["channel"].decode()[len(self.prefix) :])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - degrade to polling, never to silence
                if self.connected:
                    logger.warning("event streams lost Redis, polling instead: %s", exc)
            finally:
                self.connected = False
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except Exception:  # noqa: BLE001, S110 - the connection is gone either way
                    pass
            self.wake_all()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)


_hub: WakeupHub | None = None


def hub() -> WakeupHub:
    """This process's hub, started on first use in the running event loop."""
    global _hub
    loop = asyncio.get_running_loop()
    if _hub is None or _hub.loop is not loop:
        _hub = WakeupHub(settings.REDIS_URL)
    return _hub


async def _events(user, topic: str, last_id: int) -> AsyncIterator[str]:  # noqa: ANN001
    wakeups = hub()
    waiter = wakeups.watch(topic)
    checked = time.monotonic()
    position = last_id
    heartbeat = settings.EVENTS_HEARTBEAT_SECONDS
    try:
        yield b"retry: 1000\n\n"
        last_sent = time.monotonic()
        while True:
            # Cleared before the read: a wake-up during the read makes the next wait return.
            waiter.clear()
            frames, count, position = await wakeups.read(topic, position)
            if count and time.monotonic() - checked >= settings.EVENTS_ACCESS_RECHECK_SECONDS:
                # Someone removed from the project mid-stream stops receiving its events.
                if not await wakeups.may_see(user, topic):
                    return
                checked = time.monotonic()
            if count:
                yield frames
                last_sent = time.monotonic()
                if count == BATCH:
                    continue
            timeout = max(0.0, heartbeat - (time.monotonic() - last_sent))
            try:
                # A timeout scope, not wait_for: no task per wait, times a thousand streams.
                async with asyncio.timeout(timeout):
                    await waiter.wait()
            except TimeoutError:
                pass
            if time.monotonic() - last_sent >= heartbeat:
                yield b": heartbeat\n\n"
                last_sent = time.monotonic()
    finally:
        wakeups.unwatch(topic, waiter)


async def event_stream(request):  # noqa: ANN001, ANN201
    user = await request.auser()
    if not user.is_authenticated:
        return HttpResponse("Log in to follow live events.", status=401)
    topic = request.GET.get("topic", "")
    if not await sync_to_async(_authorise)(user, topic):
        raise Http404("No such topic.")
    # The request's own thread (sessions, authentication) would keep its database connection
    # until the response ends, which for a stream is hours: with a pool of 20 per process, the
    # 21st stream would wait for a connection. Give it back now; the stream reads on shared
    # threads.
    await sync_to_async(connections.close_all)()
    response = StreamingHttpResponse(
        _events(user, topic, _parse_last_id(request)), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
