"""One Redis subscription per web process: many open event streams in one uvicorn process share a
single pattern subscription, and a published event reaches every one of them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from urllib.parse import urlsplit

import httpx
import redis
from django.conf import settings

from releasecenter import events
from tests.conftest import free_port, stop_process, wait_for_port
from tests.procnet import local_ports_connected_to

STREAMS = 40


def redis_clients_of(pid: int) -> list[dict]:
    """Redis's own view (CLIENT LIST) of the connections the process `pid` holds to it."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    ports = local_ports_connected_to(pid, urlsplit(settings.REDIS_URL).port or 6379)
    return [c for c in client.client_list() if int(c["addr"].rsplit(":", 1)[1]) in ports]


async def follow(url: str, cookies: dict, topic: str, last_id: int, opened, received: list):  # noqa: ANN001
    async with (
        httpx.AsyncClient(base_url=url, cookies=cookies, timeout=30) as client,
        client.stream(
            "GET", "/events/stream", params={"topic": topic, "last_event_id": last_id}
        ) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("retry:"):
                opened()
            elif line.startswith("data: "):
                received.append(json.loads(line[6:]))
                return


def test_many_streams_share_one_subscription(start_web, personas):
    server = start_web()
    topic = personas.project.topic
    position = events.stream_cursor(topic)
    with server.client(personas.member) as logged_in:
        cookies = dict(logged_in.cookies)
    received: list[dict] = []

    async def scenario() -> list[dict]:
        opened = 0

        def one_opened() -> None:
            nonlocal opened
            opened += 1

        tasks = [
            asyncio.create_task(follow(server.url, cookies, topic, position, one_opened, received))
            for _ in range(STREAMS)
        ]
        deadline = time.monotonic() + 30
        while opened < STREAMS and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert opened == STREAMS
        # Every stream is open and waiting: the process holds one subscription for all of them.
        clients = await asyncio.to_thread(redis_clients_of, server.proc.pid)
        subscribed = [c for c in clients if int(c["psub"]) or int(c["sub"])]
        assert len(subscribed) == 1, clients
        assert int(subscribed[0]["psub"]) == 1 and int(subscribed[0]["sub"]) == 0
        assert len(clients) <= 3, clients

        await asyncio.to_thread(events.publish, topic, "hub.test", project=personas.project)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
        return clients

    asyncio.run(scenario())
    assert len(received) == STREAMS
    assert {e["verb"] for e in received} == {"hub.test"}
    # All streams closed: still the one subscription, ready for the next.
    subscribed = [c for c in redis_clients_of(server.proc.pid) if int(c["psub"])]
    assert len(subscribed) == 1


def start_redis(port: int, data_dir) -> subprocess.Popen:  # noqa: ANN001
    """A throwaway redis-server on its own port (never the machine's): this test stops it."""
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(data_dir),
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port, proc=proc)
    return proc


def test_streams_poll_while_redis_is_down_and_resubscribe_after(start_web, personas, tmp_path):
    port = free_port()
    server_redis = start_redis(port, tmp_path)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        server = start_web(REDIS_URL=url)
        topic = personas.project.topic
        position = events.stream_cursor(topic)
        got: list[str] = []
        with server.client(personas.member) as client:
            with client.stream(
                "GET", "/events/stream", params={"topic": topic, "last_event_id": position}
            ) as response:
                lines = response.iter_lines()
                assert next(lines).startswith("retry:")

                def next_verb() -> str:
                    for line in lines:
                        if line.startswith("data: "):
                            return json.loads(line[6:])["verb"]
                    raise AssertionError("stream ended")

                stop_process(server_redis)
                events.publish(topic, "while-down", project=personas.project)
                started = time.monotonic()
                got.append(next_verb())
                # Polling, not the 5-second safety read: Redis is gone.
                assert time.monotonic() - started < 3

                server_redis = start_redis(port, tmp_path)
                probe = redis.Redis.from_url(url)
                deadline = time.monotonic() + 15
                while not any(int(c["psub"]) for c in probe.client_list()):
                    assert time.monotonic() < deadline, "the hub did not subscribe again"
                    time.sleep(0.1)
                event = events.publish(topic, "after", project=personas.project)
                started = time.monotonic()
                # The wake-up a publisher on this Redis sends.
                probe.publish(events.channel_for(topic), str(event.pk))
                got.append(next_verb())
                assert time.monotonic() - started < 1
        assert got == ["while-down", "after"]
    finally:
        stop_process(server_redis)
