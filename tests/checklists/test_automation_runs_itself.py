"""Automated items run by themselves on a real Celery worker: when their run opens, and again
when their phase (T-offset from the planned start) begins. The worker runs monitoring's health
check against a server on 127.0.0.1; the result is credited to "automation", a failure stays
open with its evidence, and a failing automated NO-GO gate says why in the release's decision."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from checklists import services
from checklists.models import Evidence, RunItem
from deployments import services as releases
from deployments.decision import decide
from monitoring.lib.testing import TargetServer
from releasecenter.models import AuditEvent
from tests.deployments.jobs_helpers import wait_for
from tests.monitoring.support import Switchable, allow, make_check

pytestmark = pytest.mark.celery_worker

RUNBOOK = "# Smoke\n\n## Health (NO-GO)\n\n- [ ] API answers healthy\n- [ ] Manual step\n"


def _automated_template(personas, check, due: int | None = None):  # noqa: ANN001, ANN202
    template = services.import_runbook(personas.member, personas.project, RUNBOOK).template
    item = template.current_version.items.get(text="API answers healthy")
    fields = {"automation": {"kind": "check", "check_id": check.pk}}
    if due is not None:
        fields["due_offset_minutes"] = due
    services.update_item(personas.member, template, item.pk, **fields)
    return template


def _row(run):  # noqa: ANN001, ANN202
    return RunItem.objects.select_related("done_by").get(run=run, item__text="API answers healthy")


def test_an_automated_item_ticks_itself_when_its_run_opens(celery_worker, personas):
    switch = Switchable(200)
    with TargetServer({"/health": switch}) as target:
        allow(personas.staging)
        check = make_check(personas, target.url("/health"), name="api health")
        template = _automated_template(personas, check)
        run = services.create_run(personas.member, template, environment=personas.staging)

        row = wait_for(
            lambda: _row(run) if _row(run).state == "done" else None,
            timeout=30,
            what="the automated item to tick itself",
        )
        assert row.done_by is None and row.automation_passed is True
        evidence = Evidence.objects.get(run_item=row)
        assert evidence.uploaded_by is None and "HTTP status: 200" in evidence.text
        ticked = AuditEvent.objects.get(topic=run.topic, verb="run.item.ticked")
        assert ticked.actor is None and ticked.data["by"] == "automation"
        assert target.paths() == ["/health"]
        assert _row(run).automation_queued_at is not None
        # Nobody clicked anything; the manual step is still open.
        assert RunItem.objects.get(run=run, item__text="Manual step").state == "open"


def test_a_failing_automated_gate_stays_open_and_says_why_in_the_decision(celery_worker, personas):
    switch = Switchable(503)
    with TargetServer({"/health": switch}) as target:
        allow(personas.staging)
        check = make_check(personas, target.url("/health"), name="api health")
        template = _automated_template(personas, check)
        releases.update_policy(
            personas.admin,
            personas.membership(personas.admin),
            personas.staging,
            checklist_templates=[template],
        )
        release = releases.create_release(
            personas.member,
            personas.membership(personas.member),
            version="2.0.0",
            commit_sha="abcdef1234",
            environments=["staging"],
        )
        run = release.targets.get().runs.get()
        row = wait_for(
            lambda: _row(run) if _row(run).automation_passed is False else None,
            timeout=30,
            what="the automated check to fail",
        )
        assert row.state == "open"
        evidence = Evidence.objects.get(run_item=row)
        assert "HTTP status: 503" in evidence.text and evidence.name.startswith("check failure")
        messages = [r.message for r in decide(release, personas.staging).reasons]
        assert any(
            m.startswith("NO-GO gate not ticked: API answers healthy (its automated check failed:")
            and "api health" in m
            for m in messages
        ), messages


def test_an_automated_item_runs_again_when_its_phase_begins(celery_worker, personas):
    switch = Switchable(503)
    with TargetServer({"/health": switch}) as target:
        allow(personas.staging)
        check = make_check(personas, target.url("/health"), name="api health")
        template = _automated_template(personas, check, due=-30)  # T-30 minutes
        # The phase begins a little after the run opens (long enough for the worker, just
        # started, to have run the check the opening queued).
        planned = timezone.now() + timedelta(minutes=30, seconds=40)
        run = services.create_run(
            personas.member, template, environment=personas.staging, planned_start=planned
        )
        wait_for(lambda: _row(run).automation_passed is False, what="the check at run open")
        assert services.queue_due_automations() == []  # the phase has not begun
        switch.status = 200
        phase_start = planned - timedelta(minutes=30)
        assert _row(run).automation_at < phase_start
        wait_for(lambda: timezone.now() >= phase_start, timeout=45, what="the phase to begin")
        # What beat runs every minute:
        assert services.queue_due_automations() == [_row(run).pk]
        assert services.queue_due_automations() == []  # once per phase
        row = wait_for(
            lambda: _row(run) if _row(run).state == "done" else None,
            timeout=30,
            what="the item to tick itself at its phase",
        )
        assert row.done_by is None
        assert target.paths() == ["/health", "/health"]


def test_beat_queues_due_automations_every_minute():
    entry = settings.CELERY_BEAT_SCHEDULE["checklists-queue-due-automations"]
    assert entry["task"] == "checklists.tasks.queue_due_automations"
    assert entry["schedule"] <= 60
