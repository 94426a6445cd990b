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
    before = events.stream_cursor(topic)
    events.publish(topic, "test.one", project=personas.project)
    thread = publish_later(topic, personas.project, ["test.two", "test.three"])
    got = read_events(server, personas.viewer, topic, 3, last_id=before)
    thread.join()
    assert [e["data"]["verb"] for e in got] == ["test.one", "test.two", "test.three"]
    assert [e["id"] for e in got] == sorted(e["id"] for e in got)


def test_reconnect_with_last_event_id_loses_and_repeats_nothing(start_web, personas):
    server = start_web()
    topic = personas.project.topic
    events.publish(topic, "marker", project=personas.project)
    start = events.stream_cursor(topic)
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
    events.publish(topic, "before", project=personas.project)
    last = events.stream_cursor(topic)
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
    events.publish(topic, "marker", project=personas.project)
    last = events.stream_cursor(topic)
    lead_m = Membership.objects.get(user=personas.lead, project=personas.project)
    with transaction.atomic():
        services.post_announcement(personas.lead, lead_m, "Freeze starts at 16:00")
    got = read_events(server, personas.viewer, topic, 1, last_id=last, timeout=30)
    assert got, "the worker's event never reached the stream"
    assert got[0]["data"]["verb"] == "announcement.posted"
    assert got[0]["data"]["data"] == {"message": "Freeze starts at 16:00", "by": "liam-lead"}


class Overlap:
    """Two transactions on one topic whose ids and commits cross: the first to insert (the lower
    id) commits last. This is what two people ticking items of one run at once can do."""

    def __init__(self, topic, project):  # noqa: ANN001
        self.topic, self.project = topic, project
        self.inserted, self.release, self.second_done = (threading.Event() for _ in range(3))
        self.ids: dict[str, int] = {}
        self.threads = [
            threading.Thread(target=self._slow, daemon=True),
            threading.Thread(target=self._fast, daemon=True),
        ]

    def _slow(self) -> None:
        from django.db import connection

        try:
            with transaction.atomic():
                self.ids["slow"] = events.publish(self.topic, "slow", project=self.project).pk
                self.inserted.set()
                self.release.wait(20)
        finally:
            connection.close()

    def _fast(self) -> None:
        from django.db import connection

        try:
            self.inserted.wait(20)
            with transaction.atomic():
                self.ids["fast"] = events.publish(self.topic, "fast", project=self.project).pk
        finally:
            self.second_done.set()
            connection.close()

    def start(self) -> None:
        for thread in self.threads:
            thread.start()
        assert self.second_done.wait(20)
        assert self.ids["slow"] < self.ids["fast"]

    def finish(self) -> None:
        self.release.set()
        for thread in self.threads:
            thread.join(20)


@pytest.mark.django_db(transaction=True)
def test_an_event_that_commits_after_a_newer_one_is_still_delivered(personas):
    """Positions follow commits, not inserts: the reader moves past the event that committed
    first, and still gets the older one once its transaction commits."""
    topic = personas.project.topic
    events.publish(topic, "marker", project=personas.project)
    position = events.stream_cursor(topic)
    overlap = Overlap(topic, personas.project)
    overlap.start()
    try:
        sent, position = events.read_after(topic, position)
        assert [e["verb"] for e in sent] == ["fast"]
    finally:
        overlap.finish()
    # With positions taken from ids, "slow" (the lower id) would now lie behind the reader.
    sent, position = events.read_after(topic, position)
    assert [e["verb"] for e in sent] == ["slow"]
    assert sent[0]["id"] == overlap.ids["slow"] < overlap.ids["fast"]
    assert events.read_after(topic, position)[0] == []


def test_stream_and_reconnect_deliver_crossed_commits_once(start_web, personas):
    server = start_web()
    topic = personas.project.topic
    events.publish(topic, "marker", project=personas.project)
    marker = events.stream_cursor(topic)
    overlap = Overlap(topic, personas.project)
    overlap.start()
    # The reader disconnects after "fast", while "slow" is still uncommitted.
    first = read_events(server, personas.member, topic, 1, last_id=marker)
    overlap.finish()
    events.publish(topic, "after", project=personas.project)
    second = read_events(server, personas.member, topic, 2, last_id=first[-1]["id"])
    assert [e["data"]["verb"] for e in first + second] == ["fast", "slow", "after"]


@pytest.mark.django_db(transaction=True)
def test_a_page_cursor_is_never_ahead_of_an_uncommitted_event(personas):
    topic = personas.project.topic
    overlap = Overlap(topic, personas.project)
    overlap.start()
    try:
        page = events.stream_cursor(topic)
    finally:
        overlap.finish()
    # Whatever committed after the page was read comes after its cursor.
    assert [e["verb"] for e in events.read_after(topic, page)[0]] == ["slow"]


def test_a_member_removed_mid_stream_stops_receiving(start_web, personas):
    server = start_web(EVENTS_ACCESS_RECHECK_SECONDS="0")
    topic = personas.project.topic
    events.publish(topic, "before", project=personas.project)
    last = events.stream_cursor(topic)
    admin_m = Membership.objects.get(user=personas.admin, project=personas.project)
    lines = []
    with (
        server.client(personas.viewer) as client,
        client.stream(
            "GET",
            "/events/stream",
            params={"topic": topic},
            headers={"Last-Event-ID": str(last)},
            timeout=httpx.Timeout(8),
        ) as response,
    ):
        # The viewer was a member when the stream opened…
        assert response.status_code == 200
        services.remove_member(personas.admin, admin_m, personas.membership(personas.viewer))
        events.publish(topic, "secret", project=personas.project)
        started = time.monotonic()
        # …and the server ends the stream rather than send what came after the removal.
        lines.extend(response.iter_lines())
    assert not [line for line in lines if line.startswith("data: ")], lines
    assert time.monotonic() - started < 6
