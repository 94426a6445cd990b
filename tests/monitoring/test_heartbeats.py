"""Heartbeat checks: definitions through the API, pings through the web process's ASGI app,
lateness under time-machine, cron schedules across daylight-saving changes, rate limits.

The pings go through `releasecenter.asgi.application` (the code uvicorn serves), so the tests
that ping use a transactional database: the ping thread writes on its own connection.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone

from monitoring import heartbeats, ping, services
from monitoring.models import Check, CheckResult, Notification

from .support import allow


def create(client, slug: str = "shop", **body):  # noqa: ANN001, ANN003, ANN201
    body.setdefault("environment", "staging")
    body.setdefault("name", "nightly cleanup")
    body.setdefault("probe", "heartbeat")
    return client.post(f"/api/v1/projects/{slug}/checks/", body, format="json")


def heartbeat(personas, **fields) -> Check:  # noqa: ANN001, ANN003
    fields.setdefault("name", "nightly cleanup")
    fields.setdefault("environment", personas.staging)
    if "heartbeat_cron" not in fields:
        fields.setdefault("heartbeat_period_seconds", 3600)
    fields.setdefault("heartbeat_grace_seconds", 300)
    return services.create_check(
        personas.member, personas.membership(personas.member), probe="heartbeat", **fields
    )


# --- definitions ---------------------------------------------------------------------------------


def test_a_heartbeat_check_gets_a_secret_ping_url_shown_to_members(api_client_for, personas):
    member = api_client_for(personas.member)
    created = create(member, heartbeat_period_seconds=86400, heartbeat_grace_seconds=3600)
    assert created.status_code == 201, created.json()
    body = created.json()
    check = Check.objects.get(pk=body["id"])
    assert body["probe"] == "heartbeat"
    assert body["ping_url"] == f"http://testserver/ping/{check.ping_key}"
    assert body["heartbeat_due_at"] is not None
    # Viewers are members too; someone outside the project does not see the check at all.
    viewer = api_client_for(personas.viewer).get(f"/api/v1/checks/{check.pk}/")
    assert viewer.json()["ping_url"] == body["ping_url"]
    outsider = api_client_for(personas.outsider).get(f"/api/v1/checks/{check.pk}/")
    assert outsider.status_code == 404
    # Other probes have no ping URL.
    allow(personas.staging)
    http = create(member, name="web", probe="http", url="http://127.0.0.1:9/")
    assert http.status_code == 201 and http.json()["ping_url"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "heartbeat_period_seconds"),
        ({"heartbeat_period_seconds": 10}, "heartbeat_period_seconds"),
        (
            {"heartbeat_period_seconds": 3600, "heartbeat_cron": "0 3 * * *"},
            "heartbeat_period_seconds",
        ),
        ({"heartbeat_cron": "61 3 * * *"}, "heartbeat_cron"),
        (
            {"heartbeat_cron": "0 3 * * *", "heartbeat_timezone": "Mars/Olympus"},
            "heartbeat_timezone",
        ),
        (
            {"heartbeat_period_seconds": 3600, "heartbeat_grace_seconds": -1},
            "heartbeat_grace_seconds",
        ),
        ({"heartbeat_period_seconds": 3600, "url": "http://127.0.0.1/"}, "url"),
        ({"heartbeat_period_seconds": 3600, "interval_seconds": 60}, "interval_seconds"),
        ({"heartbeat_period_seconds": 3600, "assertions": ["status == 200"]}, "assertions"),
        (
            {"probe": "http", "url": "http://127.0.0.1:9/", "heartbeat_cron": "0 3 * * *"},
            "heartbeat_cron",
        ),
    ],
)
def test_bad_heartbeat_fields_are_400s_naming_the_field(api_client_for, personas, body, field):
    allow(personas.staging)
    response = create(api_client_for(personas.member), **body)
    assert response.status_code == 400, response.json()
    assert field in response.json(), response.json()
    assert not Check.objects.exists()


def test_a_heartbeat_check_cannot_be_run_like_a_request(api_client_for, personas):
    check = heartbeat(personas)
    assert services.run_units([check], trigger="manual") == []
    with pytest.raises(ValidationError, match="pinged by its job"):
        services.request_run(personas.member, personas.membership(personas.member), check)
    assert not CheckResult.objects.exists()
    check.refresh_from_db()
    assert check.status == Check.Status.UNKNOWN


def test_the_check_page_shows_the_ping_url_and_schedule(client, personas):
    check = heartbeat(personas, heartbeat_cron="0 3 * * *", heartbeat_timezone="Europe/Berlin")
    client.force_login(personas.viewer)
    html = client.get(f"/p/shop/health/checks/{check.pk}/").content.decode()
    assert f"http://testserver/ping/{check.ping_key}" in html
    assert "<code>0 3 * * *</code> (Europe/Berlin)" in html
    assert "Run now" not in html
    client.force_login(personas.outsider)
    assert client.get(f"/p/shop/health/checks/{check.pk}/").status_code == 404


# --- lateness --------------------------------------------------------------------------------


def test_a_heartbeat_goes_down_when_late_past_its_grace_and_recovers_on_a_ping(personas):
    start = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as clock:
        check = heartbeat(personas, heartbeat_period_seconds=3600, heartbeat_grace_seconds=300)
        assert check.heartbeat_due_at == start + timedelta(seconds=3900)
        statuses = heartbeats.record_pings(
            [heartbeats.Ping(check.ping_key, "success", b"cleaned 42 rows", timezone.now())]
        )
        assert statuses == [200]
        check.refresh_from_db()
        assert check.status == Check.Status.PASSING
        assert check.heartbeat_due_at == start + timedelta(seconds=3900)

        clock.move_to(start + timedelta(seconds=3899))
        assert heartbeats.mark_late() == []
        clock.move_to(start + timedelta(seconds=3901))
        assert heartbeats.mark_late() == [check.pk]
        # Once down it is not failed again at every beat.
        assert heartbeats.mark_late() == []

    check.refresh_from_db()
    assert check.status == Check.Status.FAILING
    late = CheckResult.objects.filter(health_check=check, trigger="late").get()
    assert late.error == (
        "late: expected a ping by 2026-06-01 13:00:00 UTC (grace 300 s), "
        "last ping 2026-06-01 12:00:00 UTC"
    )
    [notification] = Notification.objects.filter(health_check=check)
    assert notification.event == "check.failing"

    with time_machine.travel(start + timedelta(hours=2), tick=False):
        heartbeats.record_pings([heartbeats.Ping(check.ping_key, "success", b"", timezone.now())])
    check.refresh_from_db()
    assert check.status == Check.Status.PASSING
    assert check.heartbeat_due_at == start + timedelta(hours=3, seconds=300)
    assert Notification.objects.filter(health_check=check, event="check.recovered").exists()


def test_a_fail_ping_fails_the_check_and_start_measures_the_job(personas):
    check = heartbeat(personas)
    now = timezone.now()
    heartbeats.record_pings([heartbeats.Ping(check.ping_key, "start", b"", now)])
    heartbeats.record_pings(
        [heartbeats.Ping(check.ping_key, "success", b"", now + timedelta(seconds=42))]
    )
    result = CheckResult.objects.get(health_check=check)
    assert result.latency_ms == 42_000 and result.passed and result.trigger == "ping"
    heartbeats.record_pings([heartbeats.Ping(check.ping_key, "fail", b"disk full", now)])
    check.refresh_from_db()
    assert check.status == Check.Status.FAILING
    assert check.last_summary == "the job reported a failure (/fail)"
    assert Notification.objects.filter(health_check=check, event="check.failing").exists()


@pytest.mark.parametrize(
    ("last_ping", "expected"),
    [
        # Spring forward in Berlin (29 March 2026): 09:00 local is 08:00 UTC before, 07:00 after.
        (datetime(2026, 3, 28, 8, 0, 5, tzinfo=UTC), datetime(2026, 3, 29, 7, 0, tzinfo=UTC)),
        # Fall back (25 October 2026): 07:00 UTC before, 08:00 UTC after.
        (datetime(2026, 10, 24, 7, 0, 5, tzinfo=UTC), datetime(2026, 10, 25, 8, 0, tzinfo=UTC)),
    ],
)
def test_a_cron_schedule_follows_the_time_zone_across_daylight_saving(
    personas, last_ping, expected
):
    with time_machine.travel(last_ping, tick=False) as clock:
        check = heartbeat(
            personas,
            heartbeat_cron="0 9 * * *",
            heartbeat_timezone="Europe/Berlin",
            heartbeat_grace_seconds=600,
        )
        heartbeats.record_pings([heartbeats.Ping(check.ping_key, "success", b"", last_ping)])
        check.refresh_from_db()
        assert check.heartbeat_due_at == expected + timedelta(minutes=10)
        clock.move_to(expected + timedelta(minutes=9))
        assert heartbeats.mark_late() == []
        clock.move_to(expected + timedelta(minutes=11))
        assert heartbeats.mark_late() == [check.pk]


# --- the ping endpoint -------------------------------------------------------------------------


def ping_client() -> httpx.AsyncClient:
    from releasecenter.asgi import application

    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://testserver"
    )


@pytest.mark.django_db(transaction=True)
def test_pings_through_the_web_process(personas):
    check = heartbeat(personas)
    big = b"x" * (10 * 1024 * 1024)

    async def scenario() -> dict:
        async with ping_client() as client:
            answers = {
                "get": await client.get(f"/ping/{check.ping_key}"),
                "post": await client.post(f"/ping/{check.ping_key}", content=b"cleaned 42 rows"),
                "big": await client.post(f"/ping/{check.ping_key}/", content=big),
                "start": await client.post(f"/ping/{check.ping_key}/start"),
                "fail": await client.get(f"/ping/{check.ping_key}/fail"),
                "unknown": await client.get(f"/ping/{uuid.uuid4()}"),
                "malformed": await client.get("/ping/not-a-key"),
                "bad kind": await client.get(f"/ping/{check.ping_key}/finish"),
                "put": await client.put(f"/ping/{check.ping_key}"),
            }
        # The answer waits for the ping inbox; results are recorded from it right after.
        await ping.settled()
        return answers

    answers = asyncio.run(scenario())
    assert {name: r.status_code for name, r in answers.items()} == {
        "get": 200,
        "post": 200,
        "big": 200,
        "start": 200,
        "fail": 200,
        "unknown": 404,
        "malformed": 404,
        "bad kind": 404,
        "put": 405,
    }
    assert answers["get"].text == "OK\n"
    results = list(CheckResult.objects.filter(health_check=check).order_by("pk"))
    assert [r.passed for r in results] == [True, True, True, False]
    assert results[1].excerpt == "cleaned 42 rows"
    # 10 MB sent, 10 kB kept.
    assert results[2].excerpt.startswith("x" * 10240)
    assert len(results[2].excerpt) < 10240 + 40 and results[2].excerpt.endswith("[cut at 10 kB]")
    check.refresh_from_db()
    assert check.status == Check.Status.FAILING


@pytest.mark.django_db(transaction=True)
def test_pings_are_rate_limited_per_check(personas, settings):
    settings.HEARTBEAT_PINGS_PER_MINUTE = 3
    first, second = heartbeat(personas, name="a"), heartbeat(personas, name="b")

    async def scenario() -> list[int]:
        async with ping_client() as client:
            codes = [(await client.get(f"/ping/{first.ping_key}")).status_code for _ in range(5)]
            codes.append((await client.get(f"/ping/{second.ping_key}")).status_code)
        await ping.settled()
        return codes

    assert asyncio.run(scenario()) == [200, 200, 200, 429, 429, 200]
    assert CheckResult.objects.filter(health_check=first).count() == 3


@pytest.mark.django_db(transaction=True)
def test_an_unknown_key_takes_as_long_as_a_hit(personas, settings):
    settings.HEARTBEAT_PINGS_PER_MINUTE = 1000
    check = heartbeat(personas)

    async def timed(client: httpx.AsyncClient, path: str) -> float:
        started = time.perf_counter()
        await client.get(path)
        return time.perf_counter() - started

    async def scenario() -> tuple[list[float], list[float]]:
        hits, misses = [], []
        async with ping_client() as client:
            for _ in range(3):  # warm up: connection, first batches
                await client.get(f"/ping/{check.ping_key}")
            for _ in range(15):
                hits.append(await timed(client, f"/ping/{check.ping_key}"))
                misses.append(await timed(client, f"/ping/{uuid.uuid4()}"))
        return hits, misses

    hits, misses = asyncio.run(scenario())
    hit, miss = statistics.median(hits), statistics.median(misses)
    # Without the padding a miss costs one indexed lookup, a hit several writes.
    assert miss >= 0.6 * hit, (hit, miss)


def test_a_ping_still_in_the_inbox_counts_before_lateness_is_judged(personas):
    start = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as clock:
        check = heartbeat(personas, heartbeat_period_seconds=3600, heartbeat_grace_seconds=300)
        clock.move_to(start + timedelta(seconds=3000))
        # What the endpoint waits for: the ping is taken in, not yet recorded.
        assert heartbeats.receive(
            [heartbeats.Ping(check.ping_key, "success", b"ran", timezone.now())]
        ) == [200]
        assert not CheckResult.objects.filter(health_check=check).exists()
        clock.move_to(start + timedelta(seconds=3901))
        assert heartbeats.mark_late() == []
    check.refresh_from_db()
    assert check.status == Check.Status.PASSING
    assert check.heartbeat_due_at == start + timedelta(seconds=3000 + 3900)
    assert CheckResult.objects.get(health_check=check).excerpt == "ran"


def test_the_worker_task_records_what_waits_in_the_inbox(personas):
    from monitoring import tasks

    check = heartbeat(personas)
    now = timezone.now()
    assert heartbeats.receive(
        [
            heartbeats.Ping(check.ping_key, "start", b"", now),
            heartbeats.Ping(check.ping_key, "success", b"done", now + timedelta(seconds=3)),
        ]
    ) == [200, 200]
    assert tasks.record_ping_inbox() == 2
    result = CheckResult.objects.get(health_check=check)
    assert (result.excerpt, result.latency_ms, result.trigger) == ("done", 3000.0, "ping")
    assert tasks.record_ping_inbox() == 0
