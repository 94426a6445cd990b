"""The demo step, the "run now" hand-off, the live topic and the checklist registration."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.utils import timezone

from monitoring import probes, services
from monitoring.lib.testing import TargetServer
from monitoring.models import Check, CheckResult, EnvironmentMonitoring, PerformanceTarget
from releasecenter import events
from releasecenter.models import AuditEvent

from .support import allow, make_check


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


def test_demo_adds_checks_for_the_simulated_cluster_idempotently(db):
    call_command("seed_demo", stdout=io.StringIO())
    checks = Check.objects.filter(project__slug="acme-shop")
    first = sorted(checks.values_list("environment__name", "name", "url"))
    staging = [c for c in first if c[0] == "staging" and c[1] == "auth-service health"]
    assert staging == [
        (
            "staging",
            "auth-service health",
            "http://127.0.0.1:8001/_services/acme-shop-staging/auth-service/health",
        )
    ]
    assert set(EnvironmentMonitoring.objects.values_list("allow_list", flat=True)) == {"127.0.0.1"}
    suite = checks.get(kind="suite")
    assert suite.steps.count() == 3
    assert PerformanceTarget.objects.filter(environment__project__slug="acme-shop").count() == 4
    # Every demo URL passes the guard under the demo's allow-list.
    for check in checks.select_related("environment", "service"):
        if check.probe == Check.Probe.TCP:
            probes.validate_tcp_destination(services.policy_for(check.environment), check.url)
        elif not check.is_suite and check.probe == Check.Probe.HTTP:
            services.check_destination(check.environment, check.resolved_url())
    port = checks.get(name="cluster API port")
    assert (port.environment.name, port.probe, port.url) == (
        "staging",
        "tcp",
        "tcp://127.0.0.1:8001",
    )
    cleanup = checks.get(name="nightly cleanup")
    assert (cleanup.environment.name, cleanup.probe, cleanup.heartbeat_cron) == (
        "staging",
        "heartbeat",
        "0 3 * * *",
    )
    assert cleanup.status == "passing" and cleanup.last_ping_at is not None
    assert cleanup.heartbeat_due_at > timezone.now()
    events_before = AuditEvent.objects.count()
    call_command("seed_demo", stdout=io.StringIO())
    assert sorted(checks.values_list("environment__name", "name", "url")) == first
    assert AuditEvent.objects.count() == events_before


def test_the_demo_beat_runs_the_nightly_cleanup_which_pings_its_heartbeat(db):
    from celery.schedules import crontab

    from monitoring import tasks
    from releasecenter.schedule import BEAT_SCHEDULE

    call_command("seed_demo", stdout=io.StringIO())
    entry = BEAT_SCHEDULE["monitoring-demo-nightly-cleanup"]
    assert entry["task"] == "monitoring.tasks.demo_nightly_cleanup"
    assert entry["schedule"] == crontab(hour=3, minute=0)
    assert BEAT_SCHEDULE["monitoring-mark-late-heartbeats"]["schedule"] <= 15
    cleanup = Check.objects.get(name="nightly cleanup")
    before = cleanup.last_ping_at
    tasks.demo_nightly_cleanup()
    cleanup.refresh_from_db()
    assert cleanup.last_ping_at > before
    latest = CheckResult.objects.filter(health_check=cleanup).order_by("-started_at").first()
    assert latest.trigger == "ping" and latest.passed and '"results"' in latest.excerpt


def test_run_now_is_handed_to_one_worker_only(personas, target, django_capture_on_commit_callbacks):
    from monitoring import tasks

    allow(personas.staging)
    check = make_check(personas, target.url("/ok"))
    with django_capture_on_commit_callbacks() as callbacks:
        first = services.request_run(personas.member, personas.membership(personas.member), check)
        second = services.request_run(personas.member, personas.membership(personas.member), check)
    assert len(callbacks) == 2
    # The older request was superseded; each task delivery runs at most once.
    assert tasks.run_requested(check.pk, str(first), personas.member.pk) is False
    assert tasks.run_requested(check.pk, str(second), personas.member.pk) is True
    assert tasks.run_requested(check.pk, str(second), personas.member.pk) is False
    result = CheckResult.objects.get(health_check=check)
    assert result.trigger == "manual"
    ran = AuditEvent.objects.get(topic=check.topic, verb="check.ran")
    assert ran.actor == personas.member and ran.data["result_id"] == result.pk


def test_run_now_needs_an_engineer(client, personas, target):
    allow(personas.staging)
    check = make_check(personas, target.url("/ok"))
    client.force_login(personas.viewer)
    assert client.post(f"/p/shop/health/checks/{check.pk}/run/").status_code == 403
    client.force_login(personas.member)
    response = client.post(f"/p/shop/health/checks/{check.pk}/run/", HTTP_HX_REQUEST="true")
    assert response.status_code == 202
    check.refresh_from_db()
    assert check.run_request_token is not None


def test_check_topics_belong_to_their_project(personas, target):
    allow(personas.staging)
    check = make_check(personas, target.url("/ok"))
    assert events.topic_project_id(check.topic) == personas.project.pk
    assert events.topic_project_id("check:999999") is None


def test_checklist_automation_runs_checks(personas):
    from releasecenter import automation

    assert automation.runner_for("check") is services.run_for_checklist_item


def test_an_automated_checklist_item_is_ticked_by_a_passing_suite(personas, target):
    """The real checklist service runs a smoke suite through the registered runner."""
    from checklists import services as checklists
    from checklists.models import Evidence, RunItem

    allow(personas.staging)
    suite = services.create_suite(
        personas.member,
        personas.membership(personas.member),
        environment="staging",
        name="smoke",
        steps=[
            {"name": "health ok", "url": target.url("/ok"), "assertions": ['$.status == "ok"']},
            {"name": "bypass refused", "url": target.url("/401"), "assertions": ["status == 401"]},
        ],
    )
    template = checklists.import_runbook(
        personas.member,
        personas.project,
        "# Verify\n\n## After deploy (NO-GO)\n\n- [ ] Smoke suite passes\n- [ ] Broken check\n",
    ).template
    failing = make_check(personas, target.url("/503"), name="broken")
    for text, check in (("Smoke suite passes", suite), ("Broken check", failing)):
        # Each edit makes a new template version: look the item up afresh.
        template.refresh_from_db()
        item = template.current_version.items.get(text=text)
        checklists.update_item(
            personas.member, template, item.pk, automation={"kind": "check", "check_id": check.pk}
        )
    template.refresh_from_db()
    run = checklists.create_run(personas.member, template, environment=personas.staging)
    rows = {r.item.text: r for r in RunItem.objects.filter(run=run).select_related("item")}

    ticked = checklists.run_automated_item(None, rows["Smoke suite passes"])
    assert ticked.state == "done" and ticked.automation_passed is True
    evidence = Evidence.objects.get(run_item=ticked)
    assert (
        "Step health ok: passed" in evidence.text and "Step bypass refused: passed" in evidence.text
    )

    left_open = checklists.run_automated_item(None, rows["Broken check"])
    assert left_open.state == "open" and left_open.automation_passed is False
    assert "status 503" in left_open.automation_summary
    assert CheckResult.objects.filter(trigger="checklist").count() == 2
