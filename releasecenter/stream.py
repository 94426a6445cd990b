"""GET /events/stream?topic=…: Server-Sent Events, served by an async view under uvicorn.

The stream first sends every event of the topic after the client's Last-Event-ID (the header a
browser sends on reconnect, or ?last_event_id= on the first connect) from the database, in the
order their transactions committed (AuditEvent.stream_position), then
waits: for a Redis wake-up when Redis is configured, else for the next poll. Events always come
from the database, so a missed wake-up delays an event by at most SAFETY_SECONDS, never loses it.
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
from django.http import Http404, HttpResponse, StreamingHttpResponse

from . import events
from .access import membership_for
from .validation import ascii_int

logger = logging.getLogger(__name__)

# With Redis, re-read the database at least this often anyway, in case a wake-up was lost.
SAFETY_SECONDS = 5.0
BATCH = 500


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


async def _events(user, topic: str, last_id: int) -> AsyncIterator[str]:  # noqa: ANN001
    fetch = sync_to_async(events.read_after, thread_sensitive=False)
    authorise = sync_to_async(_authorise, thread_sensitive=False)
    checked = time.monotonic()
    position = last_id
    client = pubsub = None
    if settings.REDIS_URL:
        client = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
        pubsub = client.pubsub()
        try:
            # Subscribe before the first read so no wake-up falls between the two.
            await pubsub.subscribe(events.channel_for(topic))
        except Exception as exc:  # noqa: BLE001 - degrade to polling, never to silence
            logger.warning("event stream falls back to polling: %s", exc)
            pubsub = None
    wait = SAFETY_SECONDS if pubsub is not None else settings.EVENTS_POLL_SECONDS
    heartbeat = settings.EVENTS_HEARTBEAT_SECONDS
    try:
        yield "retry: 1000\n\n"
        last_sent = time.monotonic()
        while True:
            batch, position = await fetch(topic, position, BATCH)
            if batch and time.monotonic() - checked >= settings.EVENTS_ACCESS_RECHECK_SECONDS:
                # Someone removed from the project mid-stream stops receiving its events.
                if not await authorise(user, topic):
                    return
                checked = time.monotonic()
            for event in batch:
                yield _frame(event)
            if batch:
                last_sent = time.monotonic()
                if len(batch) == BATCH:
                    continue
            timeout = max(0.0, min(wait, heartbeat - (time.monotonic() - last_sent)))
            if pubsub is not None:
                try:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=timeout
                    )
                    # Drain whatever else arrived: one read of the database answers them all.
                    while message is not None:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=0
                        )
                except Exception as exc:  # noqa: BLE001
                    logger.warning("event stream lost Redis, polling instead: %s", exc)
                    pubsub = None
                    wait = settings.EVENTS_POLL_SECONDS
            else:
                await asyncio.sleep(timeout)
            if time.monotonic() - last_sent >= heartbeat:
                yield ": heartbeat\n\n"
                last_sent = time.monotonic()
    finally:
        if pubsub is not None:
            try:
                await pubsub.aclose()
            except Exception:  # noqa: BLE001, S110
                pass
        if client is not None:
            await client.aclose()


async def event_stream(request):  # noqa: ANN001, ANN201
    user = await request.auser()
    if not user.is_authenticated:
        return HttpResponse("Log in to follow live events.", status=401)
    topic = request.GET.get("topic", "")
    if not await sync_to_async(_authorise)(user, topic):
        raise Http404("No such topic.")
    response = StreamingHttpResponse(
        _events(user, topic, _parse_last_id(request)), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
