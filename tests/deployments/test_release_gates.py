"""Gates come from the checklist runs a release gets for each environment."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from checklists import services as checklists
from checklists.models import RunItem
from deployments import services
from deployments.decision import decide
from deployments.models import ReleaseTarget
from releasecenter.services import Conflict

RUNBOOK = """# Release runbook

## Pre-flight (NO-GO)
- [ ] Database backup verified
- [ ] Rollback plan reviewed

## Performance (CONDITIONAL)
- [ ] Load test at twice the peak

## Observability (WARNING)
- [ ] Dashboards updated for the new endpoints

## Housekeeping
- [ ] Tell support about the release
"""


def big_runbook(items: int) -> str:
    lines = ["# Big runbook", "", "## Checks (NO-GO)"]
    lines += [f"- [ ] Check number {i}" for i in range(items)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def gated(personas):
    """Production gets the runbook; a release targeting it gets a run with its gates."""
    template = checklists.import_runbook(personas.admin, personas.project, RUNBOOK).template
    admin_m = personas.membership(personas.admin)
    services.update_policy(
        personas.admin, admin_m, personas.production, checklist_templates=[template]
    )
    release = services.create_release(
        personas.member,
        personas.membership(personas.member),
        version="3.0.0",
        commit_sha="abcdef123456",
    )
    services.submit_for_review(personas.member, personas.membership(personas.member), release)
    target = ReleaseTarget.objects.get(release=release, environment=personas.production)
    return personas, release, target


def item(target, text):
    return RunItem.objects.get(run__in=target.runs.all(), item__text=text)


def codes(release, environment, **kwargs):
    return [r.code for r in decide(release, environment, **kwargs).reasons]


def test_release_gets_runs_and_lists_each_open_gate(gated):
    personas, release, target = gated
    assert target.runs.count() == 1
    assert not ReleaseTarget.objects.get(
        release=release, environment=personas.staging
    ).runs.exists()
    decision = decide(release, personas.production)
    messages = [r.message for r in decision.reasons]
    assert messages == [
        "NO-GO gate not ticked: Database backup verified",
        "NO-GO gate not ticked: Rollback plan reviewed",
        "CONDITIONAL gate not ticked (tick it, or a lead accepts the risk): "
        "Load test at twice the peak",
        "WARNING not ticked or acknowledged: Dashboards updated for the new endpoints",
    ]


def test_ticking_the_gates_approves_the_release(gated, django_capture_on_commit_callbacks):
    personas, release, target = gated
    for text in (
        "Database backup verified",
        "Rollback plan reviewed",
        "Load test at twice the peak",
        "Dashboards updated for the new endpoints",
    ):
        with django_capture_on_commit_callbacks(execute=True):
            checklists.tick(personas.member, item(target, text), expected_version=None)
    target.refresh_from_db()
    assert decide(release, personas.production).go
    # The release followed the run's events: it is approved without anyone touching it.
    assert target.status == "approved"
    with django_capture_on_commit_callbacks(execute=True):
        checklists.untick(
            personas.member, item(target, "Rollback plan reviewed"), expected_version=None
        )
    target.refresh_from_db()
    assert target.status == "in_review"


def test_na_counts_as_done(gated):
    personas, release, target = gated
    checklists.mark_na(
        personas.member,
        item(target, "Rollback plan reviewed"),
        reason="schema-only change",
        expected_version=None,
    )
    assert "Rollback plan reviewed" not in str(decide(release, personas.production).reasons)


def test_lead_accepts_a_conditional_risk_until_it_expires(gated):
    personas, release, target = gated
    key = str(item(target, "Load test at twice the peak").pk)
    with pytest.raises(Exception, match="lead"):
        services.accept_risk(
            personas.member,
            personas.membership(personas.member),
            release,
            environment="production",
            item_key=key,
            reason="load test env is down",
            expires_at=timezone.now() + timedelta(days=2),
        )
    services.accept_risk(
        personas.lead,
        personas.membership(personas.lead),
        release,
        environment="production",
        item_key=key,
        reason="load test env is down until Monday",
        expires_at=timezone.now() + timedelta(days=2),
    )
    assert "gate_conditional" not in codes(release, personas.production)
    with time_machine.travel(timezone.now() + timedelta(days=3)):
        assert "gate_conditional" in codes(release, personas.production)


def test_only_conditional_gates_can_be_accepted(gated):
    personas, release, target = gated
    key = str(item(target, "Database backup verified").pk)
    with pytest.raises(Exception, match="NO-GO gate, not CONDITIONAL"):
        services.accept_risk(
            personas.lead,
            personas.membership(personas.lead),
            release,
            environment="production",
            item_key=key,
            reason="we will be fine, honestly",
            expires_at=timezone.now() + timedelta(days=1),
        )


def test_warning_is_acknowledged_once(gated):
    personas, release, target = gated
    key = str(item(target, "Dashboards updated for the new endpoints").pk)
    services.acknowledge_warning(
        personas.member,
        personas.membership(personas.member),
        release,
        environment="production",
        item_key=key,
    )
    assert "gate_warning" not in codes(release, personas.production)
    with pytest.raises(Conflict):
        services.acknowledge_warning(
            personas.member,
            personas.membership(personas.member),
            release,
            environment="production",
            item_key=key,
        )


def test_release_page_shows_gates_and_progress(client, gated):
    personas, release, target = gated
    client.force_login(personas.viewer)
    page = client.get(f"/p/{personas.project.slug}/releases/{release.pk}/").content.decode()
    assert "Database backup verified" in page
    assert "0 of 5" in page
    assert f'data-live-topic="run:{target.runs.get().pk}"' in page


def test_release_page_queries_do_not_grow_with_items(client, personas):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    admin_m = personas.membership(personas.admin)
    counts = {}
    for version, items in (("4.0.0", 10), ("5.0.0", 300)):
        template = checklists.import_runbook(
            personas.admin, personas.project, big_runbook(items), name=f"Big {items}"
        ).template
        for env in (personas.staging, personas.production):
            services.update_policy(personas.admin, admin_m, env, checklist_templates=[template])
        release = services.create_release(
            personas.member,
            personas.membership(personas.member),
            version=version,
            commit_sha="abcdef123456",
        )
        client.force_login(personas.member)
        with CaptureQueriesContext(connection) as queries:
            response = client.get(f"/p/{personas.project.slug}/releases/{release.pk}/")
        assert response.status_code == 200
        # Each open gate is listed once per environment, under Gates.
        assert response.content.decode().count("Check number") == items * 2
        counts[items] = len(queries)
    assert 0 < counts[10] == counts[300], counts
