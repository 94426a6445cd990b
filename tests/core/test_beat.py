"""Beat runs exactly once: two real beat processes on one Redis, and only one of them schedules;
when it dies (kill -9) the other takes over within the lease."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import redis
from django.conf import settings

from releasecenter.beat import lease_key
from releasecenter.queues import queue_name
from tests.conftest import ROOT, _child_env, stop_process

LEASE = 3
DISPATCH = "monitoring.tasks.dispatch_due_checks"  # every 5 s in releasecenter/schedule.py


@pytest.fixture
def broker() -> redis.Redis:
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = [queue_name("checks"), queue_name("default"), lease_key()]
    client.delete(*keys)
    yield client
    client.delete(*keys)


def sent(client: redis.Redis, task: str) -> int:
    """How many messages for `task` wait in the checks queue (no worker takes them here)."""
    bodies = client.lrange(queue_name("checks"), 0, -1)
    return sum(json.loads(body)["headers"]["task"] == task for body in bodies)


def start_beat(tmp_path, name: str) -> subprocess.Popen:  # noqa: ANN001
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "releasecenter",
            "beat",
            "--loglevel=WARNING",
            "-s",
            str(tmp_path / f"schedule-{name}"),
        ],
        cwd=ROOT,
        env=_child_env(BEAT_LEASE_SECONDS=str(LEASE)),
    )


def wait_until(predicate, timeout: float, what: str):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.django_db
def test_two_beats_schedule_once_and_the_standby_takes_over(tmp_path, broker):
    first = start_beat(tmp_path, "first")
    second = None
    try:
        holder = wait_until(lambda: broker.get(lease_key()), 30, "the first beat to take the lease")
        second = start_beat(tmp_path, "second")
        time.sleep(3)  # the second beat is up and trying for the lease
        assert second.poll() is None
        before = sent(broker, DISPATCH)
        window = 16.0
        time.sleep(window)
        during = sent(broker, DISPATCH) - before
        # One scheduler sends the 5-second entry three or four times in 16 s; two would send
        # six or more.
        assert 2 <= during <= 4, during
        assert broker.get(lease_key()) == holder

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed = time.monotonic()
        new_holder = wait_until(
            lambda: (value := broker.get(lease_key())) not in (None, holder) and value,
            LEASE + 5,
            "the second beat to take the lease",
        )
        assert new_holder != holder
        after_kill = sent(broker, DISPATCH)
        wait_until(lambda: sent(broker, DISPATCH) > after_kill, 10, "the second beat to schedule")
        assert time.monotonic() - killed < LEASE + 10
    finally:
        stop_process(first)
        if second is not None:
            stop_process(second)
