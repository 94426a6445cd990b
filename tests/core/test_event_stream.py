"""The live event stream over a real uvicorn server: catch-up from the database, wake-ups through
Redis, polling without it, per-topic access, and reconnects that lose and repeat nothing."""

import json
import threading
import time

import httpx
import pytest
from django.db import transaction

from releasecenter import events, services
from releasecenter.models import Membership


def read_events(server, user, topic, count, last_id=None, timeout=10.0):  # noqa: ANN001
    """Open the stream, collect `count` events (or until timeout), then disconnect."""
    headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
    got = []
    with (
        server.client(user) as client,
        client.stream(
            "GET",
            "/events/stream",
            params={"topic": topic},
            headers=headers,
            timeout=httpx.Timeout(timeout),
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        deadline = time.monotonic() + timeout
        frame = {}
        for line in response.iter_lines():
            if line.startswith("id: "):
                frame["id"] = int(line[4:])
            elif line.startswith("data: "):
                frame["data"] = json.loads(line[6:])
            elif line == "" and frame:
                got.append(frame)
                frame = {}
                if len(got) >= count:
                    break
            if time.monotonic() > deadline:
                break
    return got


def publish_later(topic, project, verbs, delay=0.3):  # noqa: ANN001
    def run():
        time.sleep(delay)
        for verb in verbs:
            with transaction.atomic():
                events.publish(topic, verb, project=project, data={"verb": verb})

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_stream_sends_backlog_then_live_events(start_web, personas):
    server = start_web()
    topic = personas.project.topic
    first_id = events.publish(topic, "test.one", project=personas.project).pk
    thread = publish_later(topic, personas.project, ["test.two", "test.three"])
    got = read_events(server, personas.viewer, topic, 3, last_id=first_id - 1)
    thread.join()
    assert [e["data"]["verb"] for e in got] == ["test.one", "test.two", "test.three"]
    assert [e["id"] for e in got] == sorted(e["id"] for e in got)


def test_reconnect_with_last_event_id_loses_and_repeats_nothing(start_web, personas):
    server = start_web()
    topic = personas.project.topic
    start = events.publish(topic, "marker", project=personas.project).pk
    for i in range(6):
        events.publish(topic, f"e{i}", project=personas.project)
    first = read_events(server, personas.member, topic, 3, last_id=start)
    # Events published while disconnected must arrive after the reconnect.
    for i in range(6, 9):
        events.publish(topic, f"e{i}", project=personas.project)
    second = read_events(server, personas.member, topic, 6, last_id=first[-1]["id"])
    verbs = [e["data"]["verb"] for e in first + second]
    assert verbs == [f"e{i}" for i in range(9)]


def test_stream_polls_the_database_without_redis(start_web, personas):
    server = start_web(REDIS_URL="")
    topic = personas.project.topic
    last = events.publish(topic, "before", project=personas.project).pk
    thread = publish_later(topic, personas.project, ["polled"], delay=0.5)
    started = time.monotonic()
    got = read_events(server, personas.member, topic, 1, last_id=last)
    thread.join()
    assert [e["data"]["verb"] for e in got] == ["polled"]
    assert time.monotonic() - started < 3


def test_stream_checks_access_per_topic(start_web, personas):
    server = start_web()
    with server.client(personas.outsider) as client:
        assert (
            client.get("/events/stream", params={"topic": personas.project.topic}).status_code
            == 404
        )
        assert client.get("/events/stream", params={"topic": "nonsense"}).status_code == 404
    with server.client(None) as client:
        assert (
            client.get("/events/stream", params={"topic": personas.project.topic}).status_code
            == 401
        )


def test_heartbeat_comment_keeps_idle_streams_open(start_web, personas):
    server = start_web(EVENTS_HEARTBEAT_SECONDS="0.5")
    with (
        server.client(personas.member) as client,
        client.stream(
            "GET",
            "/events/stream",
            params={"topic": personas.project.topic, "last_event_id": "999999999"},
        ) as response,
    ):
        lines = []
        for line in response.iter_lines():
            lines.append(line)
            if line.startswith(": heartbeat"):
                break
    assert ": heartbeat" in lines


@pytest.mark.celery_worker
def test_events_published_by_a_celery_worker_reach_the_stream(start_web, celery_worker, personas):
    server = start_web()
    topic = personas.project.topic
    last = events.publish(topic, "marker", project=personas.project).pk
    lead_m = Membership.objects.get(user=personas.lead, project=personas.project)
    with transaction.atomic():
        services.post_announcement(personas.lead, lead_m, "Freeze starts at 16:00")
    got = read_events(server, personas.viewer, topic, 1, last_id=last, timeout=30)
    assert got, "the worker's event never reached the stream"
    assert got[0]["data"]["verb"] == "announcement.posted"
    assert got[0]["data"]["data"] == {"message": "Freeze starts at 16:00", "by": "liam-lead"}
