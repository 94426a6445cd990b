"""Storing a batch: result rows (by COPY on PostgreSQL), rollups, each check's latest result
and its state, with a number of statements that does not grow with the batch."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from monitoring import services, tasks
from monitoring.lib.testing import TargetServer
from monitoring.models import Check, CheckResult, CheckRollup

from .support import Switchable, allow, make_check, run


def _nul(handler: Any, query: dict[str, str]) -> None:
    if query.get("json"):
        handler._send(200, b'{"status": "ok\\u0000"}', "application/json")
    else:
        handler._send(200, b"ok\x00tail")


@pytest.fixture
def target() -> Iterator[TargetServer]:
    switch = Switchable(200)
    with TargetServer({"/switch": switch, "/nul": _nul}) as server:
        server.switch = switch
        yield server


def dispatch(checks: list[Check]) -> tuple[uuid.UUID, list[int]]:
    """What the dispatcher does to a batch (claim_due_checks, without the schedule)."""
    token = uuid.uuid4()
    ids = [c.pk for c in checks]
    Check.objects.filter(pk__in=ids).update(dispatch_token=token)
    return token, ids


def test_results_rows_match_the_outcomes_they_are_attached_to(personas, target):
    allow(personas.staging)
    good = make_check(personas, target.url("/ok"), name="good", assertions=['$.status == "ok"'])
    bad = make_check(personas, target.url("/503"), name="bad", assertions=["status == 200"])
    token, ids = dispatch([good, bad])
    outcomes = {o.check.name: o for o in services.run_batch(token, ids)}
    stored = {r.health_check.name: r for r in CheckResult.objects.select_related("health_check")}
    assert set(stored) == {"good", "bad"}
    for name, outcome in outcomes.items():
        row = stored[name]
        assert outcome.result is not None and outcome.result.pk == row.pk
        assert (row.passed, row.status_code, row.error) == (
            outcome.passed,
            outcome.status_code,
            outcome.error,
        )
        assert row.latency_ms == pytest.approx(outcome.latency_ms)
        assert row.started_at == outcome.started_at
        assert row.failures == outcome.failures and row.details == []
        assert row.excerpt == outcome.excerpt and row.trigger == "schedule"
    assert stored["bad"].failures[0]["message"] == "status 503, expected 200"
    assert '"database": "connected"' in stored["good"].excerpt


def test_latest_result_rollups_and_first_good_run(personas, target):
    allow(personas.staging)
    check = make_check(personas, target.url("/switch"), assertions=["status == 200"])
    first = run(check, trigger="schedule")
    row = Check.objects.get(pk=check.pk)
    assert row.status == "passing" and row.status_changed_at is not None
    assert row.last_passed is True and row.last_status_code == 200
    assert row.last_run_at == first.started_at
    assert row.last_summary == first.summary and row.last_latency_ms == pytest.approx(
        first.latency_ms
    )
    target.switch.status = 503
    second = run(check, trigger="schedule")
    row.refresh_from_db()
    assert row.status == "failing" and row.last_passed is False
    assert row.last_summary == "status 503, expected 200"
    buckets = {r.span: r for r in CheckRollup.objects.filter(health_check=check)}
    assert set(buckets) == {"hour", "day"}
    for bucket in buckets.values():
        # Two runs in the same hour (unless the clock crossed one between them).
        if bucket.runs == 2:
            assert bucket.failures == 1 and bucket.latency_count == 2
            assert bucket.latency_sum_ms == pytest.approx(first.latency_ms + second.latency_ms)
            assert bucket.latency_max_ms == pytest.approx(max(first.latency_ms, second.latency_ms))


def test_nul_in_a_response_is_stored_as_a_replacement_character(personas, target):
    allow(personas.staging)
    text = make_check(personas, target.url("/nul"), name="text", assertions=["status == 200"])
    as_json = make_check(
        personas, target.url("/nul?json=1"), name="json", assertions=['$.status == "fine"']
    )
    outcomes = services.run_units(services.load_checks([text.pk, as_json.pk]), trigger="api")
    assert [o.passed for o in outcomes] == [True, False]
    by_name = {r.health_check.name: r for r in CheckResult.objects.select_related("health_check")}
    assert by_name["text"].excerpt == "ok\ufffdtail"
    assert by_name["json"].failures[0]["actual"] == "ok\ufffd"
    assert Check.objects.get(pk=as_json.pk).last_summary.startswith("$.status")


def test_storing_a_batch_takes_as_many_queries_for_forty_checks_as_for_two(personas, target):
    allow(personas.staging)
    checks = [make_check(personas, target.url("/ok"), name=f"c{i}") for i in range(42)]
    counts = []
    for batch in (checks[:2], checks[2:]):
        token, ids = dispatch(batch)
        with CaptureQueriesContext(connection) as queries:
            outcomes = services.run_batch(token, ids)
        assert len(outcomes) == len(batch) and all(o.passed for o in outcomes)
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
    assert CheckResult.objects.count() == 42


def test_a_batch_is_taken_by_its_token_and_the_ids_only_narrow_it(personas, target):
    allow(personas.staging)
    checks = [make_check(personas, target.url("/ok"), name=f"c{i}") for i in range(4)]
    token, _ids = dispatch(checks[:3])
    other_token, _ = dispatch(checks[3:])
    # An id of another batch in the list is not taken; an id left out is not taken either.
    assert services.take_batch(token, [checks[0].pk, checks[1].pk, checks[3].pk]) == [
        checks[0].pk,
        checks[1].pk,
    ]
    assert services.take_batch(token, [checks[0].pk]) == []
    # Without ids (a message queued before they were sent) the token alone finds the rest.
    assert services.take_batch(token) == [checks[2].pk]
    assert services.take_batch(other_token, [checks[3].pk]) == [checks[3].pk]
    assert not Check.objects.filter(dispatch_token__isnull=False).exists()


def test_dispatch_sends_each_batch_its_ids(
    personas, target, monkeypatch, django_capture_on_commit_callbacks
):
    allow(personas.staging)
    checks = [
        make_check(personas, target.url("/ok"), name=f"c{i}", interval_seconds=60) for i in range(5)
    ]
    monkeypatch.setattr(services, "RUN_BATCH", 2)
    sent: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(tasks.run_batch, "delay", lambda token, ids: sent.append((token, ids)))
    Check.objects.update(next_run_at=services.timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        tokens = services.claim_due_checks()
    assert [token for token, _ in sent] == [str(t) for t in tokens]
    assert sorted(pk for _, ids in sent for pk in ids) == sorted(c.pk for c in checks)
    assert [len(ids) for _, ids in sent] == [2, 2, 1]
    for token, ids in sent:
        assert services.take_batch(token, ids) == sorted(ids)
