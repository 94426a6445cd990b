"""The Health pages: grid, check page with its chart and failures, forms, settings, overview."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from monitoring import services
from monitoring.lib.testing import TargetServer
from monitoring.models import Check, CheckResult, CheckRollup, PerformanceTarget
from releasecenter.models import AuditEvent

from .support import Switchable, allow, make_check, run


@pytest.fixture
def target() -> Iterator[TargetServer]:
    switch = Switchable(200)
    with TargetServer({"/switch": switch}) as server:
        server.switch = switch
        yield server


def test_health_page_shows_state_uptime_and_sparkline_per_cell(client, personas, target):
    allow(personas.staging)
    api = personas.project.services.get(name="api")
    check = make_check(personas, target.url("/switch"), service=api, name="api health")
    run(check)
    target.switch.status = 503
    run(check)
    client.force_login(personas.viewer)
    page = client.get("/p/shop/health/")
    assert page.status_code == 200
    html = page.content.decode()
    cell = re.search(
        r'<td class="cell cell-(\w+)" data-environment="staging" data-service="api">(.*?)</td>',
        html,
        re.S,
    )
    assert cell is not None and cell.group(1) == "failing"
    assert "50 %" in cell.group(2)  # one of two runs passed
    # Both runs fall in one hour (a dot), or in two should the hour turn between them.
    spark = re.search(r'<svg class="spark"[^>]*>(.*?)</svg>', cell.group(2), re.S)
    assert spark is not None and "no data" not in cell.group(2)
    assert "<circle" in spark.group(1) or "<polyline" in spark.group(1)
    assert "api health" in cell.group(2)  # the failing check is named
    assert "<script>" not in html and " style=" not in html
    assert f'data-live-topic="project:{personas.project.pk}"' in html
    assert 'hx-trigger="rc-live from:closest [data-live-topic]"' in html


def seeded_outcome(check, ago: timedelta, passed: bool, latency: float, now) -> services.Outcome:
    return services.Outcome(
        check=check,
        passed=passed,
        status_code=200 if passed else 503,
        latency_ms=latency,
        failures=[],
        error="",
        excerpt="",
        started_at=now - ago,
    )


def test_uptime_windows_and_sparkline_come_from_their_own_periods(client, personas):
    """24 h, 7 d and 30 d each count their own runs, and the sparkline draws the last day."""
    allow(personas.staging)
    api = personas.project.services.get(name="api")
    check = make_check(personas, "http://127.0.0.1:9/health", service=api, name="api health")
    [check] = services.load_checks([check.pk])
    now = timezone.now()
    hour, day = timedelta(hours=1), timedelta(days=1)
    outcomes = [
        # The last day: four good runs in four consecutive hours, at 40, 30, 20, 10 ms.
        *(seeded_outcome(check, n * hour, True, 10.0 * n, now) for n in (4, 3, 2, 1)),
        # Two days ago: inside the week, outside the day. Four runs, two failed.
        *(seeded_outcome(check, 2 * day + n * hour, n % 2 == 0, 50.0, now) for n in range(4)),
        # Ten days ago: inside the month only. Eight runs, six failed.
        *(seeded_outcome(check, 10 * day + n * hour, n < 2, 60.0, now) for n in range(8)),
        # Forty days ago: outside every window.
        *(seeded_outcome(check, 40 * day + n * hour, False, 70.0, now) for n in range(5)),
    ]
    services._record(outcomes, trigger="schedule")
    assert CheckResult.objects.filter(health_check=check).count() == 21

    client.force_login(personas.viewer)
    html = client.get("/p/shop/health/").content.decode()
    cell = re.search(
        r'<td class="cell cell-\w+" data-environment="staging" data-service="api">(.*?)</td>',
        html,
        re.S,
    )
    assert cell is not None
    # 24 h: 4 of 4; 7 d: 6 of 8; 30 d: 8 of 16. The 40-day-old failures count nowhere.
    uptime = re.search(r'<div class="uptime"[^>]*>(.*?)</div>', cell.group(1), re.S)
    assert uptime is not None
    assert re.findall(r"<span>(.*?)</span>", uptime.group(1)) == ["100 %", "75 %", "50 %"]

    spark = re.search(
        r'<svg class="spark"[^>]*aria-label="([^"]*)"[^>]*>(.*?)</svg>', cell.group(1)
    )
    assert spark is not None, cell.group(1)
    assert "10 to 40 ms" in spark.group(1)
    [points] = re.findall(r'<polyline points="([^"]+)"', spark.group(2))
    coordinates = [tuple(map(float, p.split(","))) for p in points.split()]
    assert len(coordinates) == 4
    xs = [x for x, _ in coordinates]
    ys = [y for _, y in coordinates]
    # Oldest first, one hour apart; latency falls hour by hour, so the line climbs down.
    assert xs == sorted(xs) and len(set(xs)) == 4
    assert ys == sorted(ys) and ys[0] < ys[-1]

    detail = client.get(f"/p/shop/health/checks/{check.pk}/").content.decode()
    shown = re.findall(r"<dt>(24 hours|7 days|30 days)</dt><dd>(.*?)</dd>", detail)
    assert shown == [("24 hours", "100 %"), ("7 days", "75 %"), ("30 days", "50 %")]


def test_health_page_queries_do_not_grow_with_results(client, personas, target):
    allow(personas.staging)
    allow(personas.production)
    checks = [
        make_check(personas, target.url("/ok"), environment=env, service=svc, name=f"{svc.name}")
        for env in (personas.staging, personas.production)
        for svc in personas.project.services.all()
    ]
    for check in checks:
        run(check)
    client.force_login(personas.member)

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/p/shop/health/").status_code == 200
        return len(queries)

    before = count()
    # Many more results and rollup buckets spread over the month.
    now = timezone.now()
    outcomes = []
    for check in services.load_checks([c.pk for c in checks]):
        for hours in range(0, 24 * 30, 7):
            outcomes.append(
                services.Outcome(
                    check=check,
                    passed=hours % 3 != 0,
                    status_code=200,
                    latency_ms=10.0 + hours % 50,
                    failures=[],
                    error="",
                    excerpt="",
                    started_at=now - timedelta(hours=hours),
                )
            )
    services._record(outcomes, trigger="schedule")
    assert CheckResult.objects.count() > 400
    assert count() == before


def test_grid_is_paginated_by_service(client, personas):
    from releasecenter.models import Service

    Service.objects.bulk_create(
        [Service(project=personas.project, name=f"svc-{i:02}") for i in range(30)]
    )
    client.force_login(personas.viewer)
    first = client.get("/p/shop/health/").content.decode()
    second = client.get("/p/shop/health/?page=2").content.decode()
    assert "Page 1 of 2" in first and "Page 2 of 2" in second
    assert "svc-29" in second and "svc-29" not in first


def test_empty_states(client, personas):
    client.force_login(personas.member)
    html = client.get("/p/shop/health/").content.decode()
    assert "No health checks yet" in html and "No smoke suites yet" in html
    assert "No checks yet" in client.get("/p/shop/health/checks/").content.decode()
    incidents = client.get("/p/shop/incidents/")
    assert incidents.status_code == 200 and "No open incidents." in incidents.content.decode()


def test_check_page_has_chart_failures_and_live_wrapper(client, personas, target):
    allow(personas.staging)
    check = make_check(personas, target.url("/switch"), assertions=['$.status == "ok"'])
    run(check)
    target.switch.status = 503
    run(check)
    client.force_login(personas.viewer)
    html = client.get(f"/p/shop/health/checks/{check.pk}/").content.decode()
    assert '<svg class="chart"' in html and "2 runs, 1 failed" in html
    assert f'data-live-topic="check:{check.pk}"' in html
    assert "$.status is &#x27;down&#x27;, expected &#x27;ok&#x27;" in html
    assert "data-run-now" not in html  # a viewer cannot run it
    fragment = client.get(f"/p/shop/health/checks/{check.pk}/", HTTP_HX_REQUEST="true")
    assert fragment.content.decode().startswith('<div id="check-live"')


def test_outsiders_get_404_on_every_page(client, personas, target):
    allow(personas.staging)
    check = make_check(personas, target.url("/ok"))
    client.force_login(personas.outsider)
    for path in (
        "/p/shop/health/",
        "/p/shop/health/checks/",
        f"/p/shop/health/checks/{check.pk}/",
        f"/p/shop/health/checks/{check.pk}/edit/",
        f"/p/shop/health/checks/{check.pk}/delete/",
        "/p/shop/health/environments/staging/",
    ):
        assert client.get(path).status_code == 404, path
    assert client.post(f"/p/shop/health/checks/{check.pk}/run/").status_code == 404
    assert client.post(f"/p/shop/health/checks/{check.pk}/delete/").status_code == 404
    assert Check.objects.filter(pk=check.pk).exists()


def test_create_edit_and_delete_a_check_in_the_ui(client, personas, target):
    allow(personas.staging)
    client.force_login(personas.member)
    refused = client.post(
        "/p/shop/health/checks/new/",
        {
            "name": "metadata",
            "environment": "staging",
            "method": "GET",
            "url": "http://169.254.169.254/",
            "assertions": "status == 200",
            "timeout_seconds": "5",
        },
    )
    assert refused.status_code == 200
    assert "rule: link-local" in refused.content.decode()
    assert not Check.objects.exists()

    created = client.post(
        "/p/shop/health/checks/new/",
        {
            "name": "api health",
            "environment": "staging",
            "service": "api",
            "method": "GET",
            "url": target.url("/ok"),
            "headers": "Accept: application/json",
            "secret_headers": "Authorization: Bearer abc123",
            "assertions": 'status == 200\n$.status == "ok"\n{"type": "latency", "max_ms": 900}',
            "timeout_seconds": "5",
            "interval_seconds": "60",
            "enabled": "on",
        },
    )
    check = Check.objects.get(name="api health")
    assert created.status_code == 302 and created["Location"].endswith(f"/checks/{check.pk}/")
    assert check.interval_seconds == 60 and check.next_run_at is not None
    assert check.secret_header_names == ["Authorization"]

    edit = client.get(f"/p/shop/health/checks/{check.pk}/edit/").content.decode()
    assert "abc123" not in edit and "$.status == &quot;ok&quot;" in edit
    saved = client.post(
        f"/p/shop/health/checks/{check.pk}/edit/",
        {
            "name": "api health",
            "service": "api",
            "method": "HEAD",
            "url": target.url("/ok"),
            "assertions": "status == 200",
            "timeout_seconds": "3",
        },
    )
    assert saved.status_code == 302
    check.refresh_from_db()
    assert check.method == "HEAD" and check.secret_header_values() == {
        "Authorization": "Bearer abc123"
    }
    assert check.interval_seconds is None and check.next_run_at is None

    confirm = client.get(f"/p/shop/health/checks/{check.pk}/delete/").content.decode()
    assert "data-confirm" in confirm and "cannot be undone" in confirm
    assert client.post(f"/p/shop/health/checks/{check.pk}/delete/").status_code == 302
    assert not Check.objects.filter(pk=check.pk).exists()
    assert AuditEvent.objects.filter(verb="check.deleted").count() == 1


def test_suite_pages_add_steps(client, personas, target):
    allow(personas.staging)
    client.force_login(personas.member)
    response = client.post(
        "/p/shop/health/suites/new/", {"name": "smoke", "environment": "staging", "enabled": "on"}
    )
    suite = Check.objects.get(name="smoke")
    assert response["Location"].endswith(f"/checks/{suite.pk}/steps/new/")
    client.post(
        f"/p/shop/health/checks/{suite.pk}/steps/new/",
        {
            "name": "bypass refused",
            "method": "GET",
            "url": target.url("/401"),
            "assertions": "status == 401",
            "timeout_seconds": "5",
        },
    )
    html = client.get(f"/p/shop/health/checks/{suite.pk}/").content.decode()
    assert "bypass refused" in html and "status == 401" in html
    assert run(suite).passed


def test_environment_settings_page(client, personas):
    client.force_login(personas.lead)
    page = client.get("/p/shop/health/environments/staging/").content.decode()
    assert "Only an admin can change what is allowed" in page
    client.post(
        "/p/shop/health/environments/staging/",
        {
            "action": "target",
            "target-metric": "response_time_avg",
            "target-target": "200",
            "target-alert_threshold": "500",
            "target-window_hours": "1",
        },
    )
    assert PerformanceTarget.objects.get(environment=personas.staging).alert_threshold == 500
    client.force_login(personas.admin)
    bad = client.post(
        "/p/shop/health/environments/staging/",
        {"action": "settings", "env-allow_list": "127.0.0.1\nnot valid!", "env-allow_public": "on"},
    )
    assert "neither an IP address" in bad.content.decode()
    client.force_login(personas.member)
    assert (
        client.post(
            "/p/shop/health/environments/staging/",
            {"action": "settings", "env-allow_list": "0.0.0.0/0"},
        ).status_code
        == 403
    )


def test_overview_shows_health_and_a_breached_target(client, personas, target):
    allow(personas.staging)
    check = make_check(personas, target.url("/switch"), name="api health")
    target.switch.status = 503
    PerformanceTarget.objects.create(
        environment=personas.staging, metric="error_rate", target=0.1, alert_threshold=1
    )
    run(check)
    client.force_login(personas.viewer)
    html = client.get("/p/shop/").content.decode()
    assert "0 of 1 check passing" in html
    assert "failing: api health" in html
    assert "Error rate: 100% above alert 1%" in html
    assert CheckRollup.objects.filter(health_check=check).count() == 2
