"""Scheduled checks: claimed from beat without drift, handed out once; retention."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from monitoring import services
from monitoring.lib.testing import TargetServer
from monitoring.models import Check, CheckResult, CheckRollup

from .support import allow, make_check

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


@pytest.mark.parametrize(
    ("late_by", "expected"),
    [
        (timedelta(0), T0 + timedelta(seconds=60)),
        (timedelta(seconds=7), T0 + timedelta(seconds=60)),
        (timedelta(seconds=59.9), T0 + timedelta(seconds=60)),
        (timedelta(seconds=60), T0 + timedelta(seconds=120)),
        # Missed slots are skipped, not run in a burst; the grid stays where it was.
        (timedelta(seconds=185), T0 + timedelta(seconds=240)),
    ],
)
def test_next_slot_comes_from_the_schedule(late_by, expected):
    assert services.next_slot(T0, 60, T0 + late_by) == expected


def test_dispatch_advances_from_the_schedule_not_from_when_runs_finish(
    personas, target, django_capture_on_commit_callbacks
):
    allow(personas.staging)
    check = make_check(personas, target.url("/ok"), interval_seconds=60)
    Check.objects.filter(pk=check.pk).update(next_run_at=T0)
    slots = []
    # Beat comes late by a varying amount, and each run takes a while: the slots stay on the grid.
    for tick, late in enumerate([3, 11, 0.5, 29, 7]):
        now = T0 + timedelta(seconds=60 * tick + late)
        with django_capture_on_commit_callbacks() as callbacks:
            [token] = services.claim_due_checks(now=now)
        assert len(callbacks) == 1  # one batch task enqueued after commit
        assert services.claim_due_checks(now=now) == []  # nothing left due
        [outcome] = services.run_batch(token)
        assert outcome.passed
        slots.append(Check.objects.get(pk=check.pk).next_run_at)
    assert slots == [T0 + timedelta(seconds=60 * (i + 1)) for i in range(5)]
    assert CheckResult.objects.filter(health_check=check, trigger="schedule").count() == 5
    assert target.paths() == ["/ok"] * 5


def test_only_enabled_scheduled_top_level_checks_are_claimed(personas, target):
    allow(personas.staging)
    due = make_check(personas, target.url("/ok"), name="due", interval_seconds=30)
    paused = make_check(personas, target.url("/ok"), name="paused", interval_seconds=30)
    on_demand = make_check(personas, target.url("/ok"), name="on demand")
    later = make_check(personas, target.url("/ok"), name="later", interval_seconds=30)
    services.update_check(
        personas.member, personas.membership(personas.member), paused, enabled=False
    )
    Check.objects.filter(pk__in=[due.pk, paused.pk, on_demand.pk]).update(next_run_at=T0)
    Check.objects.filter(pk=later.pk).update(next_run_at=T0 + timedelta(minutes=5))
    [token] = services.claim_due_checks(now=T0 + timedelta(seconds=1))
    assert services.take_batch(token) == [due.pk]


def test_a_batch_is_handed_out_once(personas, target):
    allow(personas.staging)
    checks = [
        make_check(personas, target.url("/ok"), name=f"c{i}", interval_seconds=60) for i in range(3)
    ]
    Check.objects.update(next_run_at=T0)
    [token] = services.claim_due_checks(now=T0)
    assert sorted(services.take_batch(token)) == sorted(c.pk for c in checks)
    assert services.take_batch(token) == []  # a redelivered task runs nothing
    assert services.run_batch(token) == []


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_at_once_never_claim_the_same_check(personas, target):
    allow(personas.staging)
    for i in range(40):
        make_check(personas, target.url("/ok"), name=f"c{i}", interval_seconds=60)
    Check.objects.update(next_run_at=T0)
    tokens: list = []
    barrier = threading.Barrier(4)

    def dispatch() -> None:
        try:
            barrier.wait(timeout=10)
            tokens.extend(services.claim_due_checks(now=T0 + timedelta(seconds=1)))
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    claimed = [pk for token in tokens for pk in services.take_batch(token)]
    assert sorted(claimed) == sorted(Check.objects.values_list("pk", flat=True))
    assert set(Check.objects.values_list("next_run_at", flat=True)) == {T0 + timedelta(seconds=60)}


def test_retention_drops_old_results_and_keeps_rollups_for_a_year(personas, target):
    allow(personas.staging)
    check = make_check(personas, target.url("/ok"))
    now = timezone.now()
    outcomes = [
        services.Outcome(
            check=services.load_checks([check.pk])[0],
            passed=True,
            status_code=200,
            latency_ms=5.0,
            failures=[],
            error="",
            excerpt="",
            started_at=now - timedelta(days=days),
        )
        for days in (1, 29, 31, 200, 400)
    ]
    services._record(outcomes, trigger="schedule")
    assert CheckRollup.objects.filter(health_check=check, span="day").count() == 5
    deleted = services.prune(now=now, batch=1)
    assert deleted == {"results": 3, "rollups": 2}
    kept = sorted((now - r).days for r in CheckResult.objects.values_list("started_at", flat=True))
    assert kept == [1, 29]
    assert sorted(
        (now - r).days
        for r in CheckRollup.objects.filter(span="day").values_list("start", flat=True)
    ) == [1, 29, 31, 200]
    assert services.prune(now=now) == {"results": 0, "rollups": 0}
