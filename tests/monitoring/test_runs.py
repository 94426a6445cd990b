"""Running checks through the Django layer: assertions against targets on 127.0.0.1,
concurrency and timeouts, and the address guard at run time.

At run time the guard's inner network backend is a SpyBackend wherever a non-loopback address
is involved: it records every connection the guard let through and refuses anything that is
not loopback itself, so a broken guard fails the test instead of reaching the network.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from monitoring import services
from monitoring.lib.testing import SpyBackend, TargetServer
from monitoring.models import CheckResult

from .support import allow, make_check, run


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


@pytest.fixture
def other() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


@pytest.mark.parametrize(
    ("path", "assertions", "passed"),
    [
        ("/ok", ["status == 200"], True),
        ("/503", ["status in [200, 204]"], False),
        (
            "/ok",
            ['$.status == "ok"', '$.database in ["connected"]', "$.items[0].name exists"],
            True,
        ),
        ("/ok", ['$.database == "disconnected"'], False),
        ("/ok", ["database exists", "status == 200"], True),
        ("/slow", ["latency < 50"], False),
        ("/ok", ["latency < 5000"], True),
        ("/text", ['body matches "build [0-9.]+ ready"'], True),
        ("/text", ['body matches "^ERROR"'], False),
        ("/ok", ['header X-Service == "release-center"'], True),
    ],
)
def test_assertions_against_a_real_target(personas, target, path, assertions, passed):
    allow(personas.staging)
    check = make_check(personas, target.url(path), assertions=assertions)
    outcome = run(check)
    assert outcome.passed is passed, outcome.failures
    stored = CheckResult.objects.get(health_check=check)
    assert stored.passed is passed and stored.latency_ms is not None
    if not passed:
        [failure] = stored.failures
        assert failure["expected"] is not None and failure["message"]


def test_a_path_is_joined_to_the_environment_base_url(personas, target):
    allow(personas.staging)
    personas.staging.base_url = f"http://127.0.0.1:{target.port}"
    personas.staging.save()
    api = personas.project.services.get(name="api")
    api.health_path = "/ok"
    api.save()
    by_service = make_check(personas, "", service=api, name="by service")
    by_path = make_check(personas, "/text", name="by path")
    assert run(by_service).passed and run(by_path).passed
    assert target.paths() == ["/ok", "/text"]


def test_a_hanging_target_delays_no_other_check_beyond_its_own_timeout(personas, target, other):
    allow(personas.staging)
    hanging = make_check(personas, target.url("/hang"), name="hangs", timeout_seconds=1.0)
    quick = [make_check(personas, other.url("/ok"), name=f"quick {i}") for i in range(20)]
    started = time.monotonic()
    outcomes = services.run_units(
        services.load_checks([hanging.pk, *(c.pk for c in quick)]), trigger="schedule"
    )
    elapsed = time.monotonic() - started
    by_name = {o.check.name: o for o in outcomes}
    assert by_name["hangs"].passed is False and "timed out after 1 s" in by_name["hangs"].error
    assert all(by_name[f"quick {i}"].passed for i in range(20))
    assert all(by_name[f"quick {i}"].latency_ms < 900 for i in range(20))
    assert elapsed < 3.0, elapsed
    # One pooled keep-alive client: twenty checks, a handful of connections.
    assert len(other.connections()) <= services.PER_HOST_LIMIT


def test_allow_list_removed_after_creation_fails_the_run_without_a_connection(personas, target):
    allow(personas.staging)
    check = make_check(personas, target.url("/ok"))
    allow(personas.staging, "")
    spy = SpyBackend()
    outcome = run(check, inner_backend=spy)
    assert outcome.passed is False
    assert outcome.failures[0]["rule"] == "loopback"
    assert spy.attempts == [] and target.paths() == []
    stored = CheckResult.objects.get(health_check=check)
    assert stored.error.startswith("blocked by address policy (loopback)")


def test_a_redirect_to_a_refused_address_is_refused_at_connect(personas, target, other):
    # Only the first target's port is allowed; the second is loopback but not on the list.
    allow(personas.staging, f"127.0.0.1:{target.port}")
    for name, to in (
        ("to metadata", "http://169.254.169.254/latest/meta-data/"),
        ("to private", "http://10.0.0.1/admin"),
        ("to another port", other.url("/ok")),
        ("to ipv6 loopback", f"http://[::1]:{other.port}/ok"),
        ("to hex loopback", f"http://0x7f000001:{other.port}/ok"),
    ):
        check = make_check(
            personas, target.url(f"/redirect?to={to}"), name=name, follow_redirects=True
        )
        spy = SpyBackend()
        outcome = run(check, inner_backend=spy)
        assert outcome.passed is False, name
        assert "blocked by address policy" in outcome.error, (name, outcome.error)
        # The guard let exactly one connection through: to the allowed first hop.
        assert spy.attempts == [("127.0.0.1", target.port)], (name, spy.attempts)
    assert other.paths() == []


def test_spellings_of_refused_addresses_fail_at_run_time_too(personas):
    """Stored URLs that the guard refuses (e.g. an allow-list narrowed later) never connect."""
    from monitoring.models import Check

    allow(personas.staging, "")
    spy = SpyBackend()
    urls = {
        "metadata": ("http://169.254.169.254/", "link-local"),
        "private": ("http://10.0.0.1/", "private"),
        "loopback": ("http://127.0.0.1:9/", "loopback"),
        "v6": ("http://[::1]:9/", "loopback"),
        "hex": ("http://0x7f000001:9/", "loopback"),
        "decimal": ("http://2130706433:9/", "loopback"),
        "mapped": ("http://[::ffff:127.0.0.1]:9/", "loopback"),
        "name": ("http://localhost:9/", "loopback"),
    }
    # Written directly: creation through the service would refuse them (tested elsewhere).
    checks = [
        Check.objects.create(
            project=personas.project,
            environment=personas.staging,
            name=name,
            url=url,
            assertions=[],
        )
        for name, (url, _rule) in urls.items()
    ]
    outcomes = services.run_units(
        services.load_checks([c.pk for c in checks]), trigger="manual", inner_backend=spy
    )
    assert {o.check.name: o.failures[0].get("rule") for o in outcomes} == {
        name: rule for name, (_url, rule) in urls.items()
    }
    assert spy.attempts == []


def test_the_database_and_redis_stay_refused_at_run_time(personas):
    from django.conf import settings

    from monitoring.models import Check

    allow(personas.staging, "127.0.0.1")
    port = int(settings.DATABASES["default"]["PORT"] or 5432)
    check = Check.objects.create(
        project=personas.project,
        environment=personas.staging,
        name="db",
        url=f"http://127.0.0.1:{port}/",
    )
    spy = SpyBackend()
    outcome = run(check, inner_backend=spy)
    assert outcome.failures[0]["rule"] == "internal-service"
    assert spy.attempts == []


def test_deployment_verification_runs_suites_and_checks_of_the_environment(personas, target):
    allow(personas.staging)
    allow(personas.production)
    api = personas.project.services.get(name="api")
    web = personas.project.services.get(name="web")
    make_check(personas, target.url("/ok"), service=api, name="api")
    make_check(personas, target.url("/503"), service=web, name="web")
    make_check(personas, target.url("/503"), environment=personas.production, name="prod")
    services.create_suite(
        personas.member,
        personas.membership(personas.member),
        environment="staging",
        name="smoke",
        steps=[{"name": "ok", "url": target.url("/ok"), "assertions": ["status == 200"]}],
    )
    everything = services.run_suite_for_environment(personas.staging)
    assert everything.ran == 3 and everything.passed is False
    assert [o.check.name for o in everything.failed()] == ["web"]
    assert "web" in everything.summary
    api_only = services.run_suite_for_environment(personas.staging, services=["api"])
    assert api_only.passed and api_only.ran == 2  # the api check and the environment-wide suite
    suites_only = services.run_suite_for_environment(personas.staging, include_checks=False)
    assert suites_only.passed and suites_only.ran == 1
    assert CheckResult.objects.filter(trigger="deployment").count() == 6
    nothing = services.run_suite_for_environment(personas.production, include_checks=False)
    assert nothing.passed and nothing.ran == 0


def test_checklist_items_run_checks_of_their_own_project_only(personas, target):
    from types import SimpleNamespace

    allow(personas.staging)
    check = make_check(personas, target.url("/ok"), assertions=['$.status == "ok"'])
    item = SimpleNamespace(
        item=SimpleNamespace(automation={"kind": "check", "check_id": check.pk}),
        run=SimpleNamespace(project_id=personas.project.pk, environment_id=personas.staging.pk),
        pk=1,
    )
    result = services.run_for_checklist_item(item)
    assert result.passed and "HTTP status: 200" in result.evidence_text
    assert '"status": "ok"' in result.evidence_text
    by_name = SimpleNamespace(
        item=SimpleNamespace(automation={"kind": "check", "name": check.name}), run=item.run, pk=2
    )
    assert services.run_for_checklist_item(by_name).passed
    foreign = SimpleNamespace(
        item=item.item,
        run=SimpleNamespace(project_id=personas.other_project.pk, environment_id=None),
        pk=3,
    )
    refused = services.run_for_checklist_item(foreign)
    assert not refused.passed and "does not exist in this project" in refused.summary
    assert CheckResult.objects.filter(trigger="checklist").count() == 2


def test_a_suite_stops_starting_steps_after_its_deadline(personas, target, monkeypatch):
    allow(personas.staging)
    monkeypatch.setattr(services, "SUITE_DEADLINE_SECONDS", 0.5)
    suite = services.create_suite(
        personas.member,
        personas.membership(personas.member),
        environment="staging",
        name="slow smoke",
        steps=[
            {"name": "slow", "url": target.url("/slow?ms=800"), "assertions": ["status == 200"]},
            {"name": "never", "url": target.url("/ok"), "assertions": ["status == 200"]},
        ],
    )
    outcome = run(suite)
    assert outcome.passed is False
    assert [d["passed"] for d in outcome.details] == [True, False]
    assert "took longer than 0.5 s" in outcome.failures[0]["message"]
    assert target.paths() == ["/slow"]
