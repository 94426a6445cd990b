"""The release page: notes rendered as safe Markdown, health-check state changes of its
environments in its timeline, an approval that lapses with its risk acceptance, and the
sign-off API's answer to a body that is not an object."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from checklists import services as checklists
from checklists.models import RunItem
from deployments import services
from deployments.models import ReleaseTarget, Signoff
from monitoring.lib.testing import TargetServer
from releasecenter.models import AuditEvent
from tests.monitoring.support import Switchable, allow, make_check, run

RUNBOOK = """# Go-live

## Proof (NO-GO)
- [ ] Database backup verified

## Performance (CONDITIONAL)
- [ ] Load test at twice the peak
"""


def make_release(personas, version="6.0.0", **kwargs):
    return services.create_release(
        personas.member,
        personas.membership(personas.member),
        version=version,
        commit_sha="abcdef123456",
        **kwargs,
    )


def page_of(client, personas, release) -> str:
    response = client.get(f"/p/{personas.project.slug}/releases/{release.pk}/")
    assert response.status_code == 200
    return response.content.decode()


# --- Notes ------------------------------------------------------------------------------------


def test_notes_are_markdown_with_html_shown_as_text(client, personas):
    notes = (
        "**Checkout** redesign, see `docs/checkout.md`.\n\n"
        "- faster search\n- SDK upgrade\n\n"
        '<script>alert("notes")</script>\n\n'
        '<img src=x onerror="alert(1)">\n\n'
        "[click](javascript:alert(2))"
    )
    release = make_release(personas, notes=notes)
    client.force_login(personas.viewer)
    page = page_of(client, personas, release)
    assert "<strong>Checkout</strong>" in page
    assert "<code>docs/checkout.md</code>" in page
    assert "<li>faster search</li>" in page
    assert '<script>alert("notes")' not in page and "&lt;script&gt;" in page
    assert "<img" not in page and "&lt;img src=x" in page
    assert 'href="javascript:' not in page


# --- Gates --------------------------------------------------------------------------------------

GATE_RUNBOOK = """# Go-live

## Proof (NO-GO)
- [ ] Backup of <b>orders</b> & "carts" verified
- [ ] Restore rehearsed

## Performance (CONDITIONAL)
- [ ] Load test <script>alert(1)</script>

## Nice to have (WARNING)
- [ ] Dashboards updated
"""


def in_review_in_production(personas, runbook: str):
    """A release for production only, in review, whose checklist is this runbook: the release,
    its target and the target's run items."""
    template = checklists.import_runbook(personas.admin, personas.project, runbook).template
    services.update_policy(
        personas.admin,
        personas.membership(personas.admin),
        personas.production,
        checklist_templates=[template],
    )
    release = make_release(personas, environments=["production"])
    services.submit_for_review(personas.member, personas.membership(personas.member), release)
    target = ReleaseTarget.objects.get(release=release)
    return release, target, RunItem.objects.filter(run__in=target.runs.all())


@pytest.fixture
def gated(personas):
    release, _target, items = in_review_in_production(personas, GATE_RUNBOOK)
    checklists.tick(
        personas.member, items.get(item__text="Restore rehearsed"), expected_version=None
    )
    return release, items


def gate_part(page: str) -> str:
    return page.split('id="gates-production"', 1)[1].split("<h3", 1)[0]


def test_gates_list_open_ones_with_their_actions_and_fold_the_closed(client, personas, gated):
    release, items = gated
    client.force_login(personas.lead)
    gates = gate_part(page_of(client, personas, release))
    # Item texts are shown as text, never as markup.
    assert "<script>" not in gates and "Load test &lt;script&gt;alert(1)&lt;/script&gt;" in gates
    assert 'Backup of &lt;b&gt;orders&lt;/b&gt; &amp; "carts" verified' in gates
    open_part, closed_part = gates.split('<details class="closed-gates">')
    for text in ("Backup of", "Load test", "Dashboards updated"):
        key = items.get(item__text__startswith=text).key
        assert f'data-gate="{key}"' in open_part
    assert '<span class="badge sev-no-go">NO-GO</span>' in open_part
    # A lead may accept the conditional gate's risk in production and acknowledge the warning.
    assert open_part.count('name="csrfmiddlewaretoken"') == 2
    assert "Accept risk</summary>" in open_part and ">Acknowledge</button>" in open_part
    assert "1 gate ticked or N/A" in closed_part and ">Restore rehearsed</a>" in closed_part


def test_gate_forms_are_for_leads_and_work_when_posted(client, personas, gated):
    release, items = gated
    client.force_login(personas.member)
    gates = gate_part(page_of(client, personas, release))
    assert "Accept risk</summary>" not in gates  # not a lead
    assert ">Acknowledge</button>" in gates
    client.force_login(personas.lead)
    gates = gate_part(page_of(client, personas, release))
    action = gates.split('<form method="post" action="', 1)[1].split('"', 1)[0]
    assert action == f"/p/{personas.project.slug}/releases/{release.pk}/accept-risk/"
    load_key = items.get(item__text__startswith="Load test").key
    response = client.post(
        action,
        {
            "environment": "production",
            "item_key": load_key,
            "reason": "load test environment is down until Monday",
            "expires_at": (timezone.localtime() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"),
        },
    )
    assert response.status_code == 302
    warning_key = items.get(item__text="Dashboards updated").key
    response = client.post(
        f"/p/{personas.project.slug}/releases/{release.pk}/acknowledge/",
        {"environment": "production", "item_key": warning_key},
    )
    assert response.status_code == 302
    gates = gate_part(page_of(client, personas, release))
    assert (
        "risk accepted until" in gates and '<small class="accepted">acknowledged</small>' in gates
    )
    assert "Accept risk</summary>" not in gates and ">Acknowledge</button>" not in gates


def test_timeline_shows_names_as_text(client, personas, gated):
    release, _items = gated
    client.force_login(personas.viewer)
    page = page_of(client, personas, release)
    timeline = page.split('<ul class="timeline">', 1)[1].split("</ul>", 1)[0]
    assert timeline.count("<li>") >= 2 and "<strong>mia-member</strong>" in timeline
    assert "<script>" not in timeline


# --- Health checks in the timeline --------------------------------------------------------------


@pytest.fixture
def target() -> Iterator[TargetServer]:
    switch = Switchable(200)
    with TargetServer({"/switch": switch}) as server:
        server.switch = switch
        yield server


def timeline_lines(page: str) -> list[str]:
    timeline = page.split("<h2>Timeline</h2>", 1)[1]
    return [line for line in timeline.split("<li>")[1:]]


def test_timeline_shows_state_changes_of_the_release_environments_checks(client, personas, target):
    allow(personas.staging)
    allow(personas.production)
    api = make_check(
        personas, target.url("/switch"), environment=personas.production, name="api health"
    )
    elsewhere = make_check(
        personas, target.url("/switch"), environment=personas.staging, name="staging health"
    )
    run(api)
    run(elsewhere)
    target.switch.status = 503
    run(api)  # fails before the release exists: not part of its story
    release = make_release(personas, environments=["production"])
    target.switch.status = 200
    run(api)
    target.switch.status = 503
    run(elsewhere)  # staging is not a target of this release
    client.force_login(personas.viewer)
    with CaptureQueriesContext(connection) as first:
        page = page_of(client, personas, release)
    checks = [line for line in timeline_lines(page) if "health check" in line]
    assert len(checks) == 1, checks
    assert 'data-verb="check.recovered"' in checks[0]
    assert (
        f'health check <a href="/p/shop/health/checks/{api.pk}/">api health</a> in production recovered'
    ) in checks[0]

    run(api)
    target.switch.status = 200
    run(api)
    target.switch.status = 503
    run(api)
    with CaptureQueriesContext(connection) as second:
        page = page_of(client, personas, release)
    checks = [line for line in timeline_lines(page) if "health check" in line]
    # Newest first, and each change once (the copy on the check's own topic is not repeated).
    assert [line.split('data-verb="')[1].split('"')[0] for line in checks] == [
        "check.failing",
        "check.recovered",
        "check.failing",
        "check.recovered",
    ]
    assert "api health</a> in production is failing: status 503" in checks[0]
    assert "staging health" not in page
    assert len(second) == len(first), (len(first), len(second))


# --- An approval that lapses ------------------------------------------------------------------


@pytest.fixture
def accepted(personas):
    """Production's NO-GO gate ticked and its CONDITIONAL gate accepted for two days."""
    release, target, run_items = in_review_in_production(personas, RUNBOOK)
    checklists.tick(
        personas.member,
        run_items.get(item__text="Database backup verified"),
        expected_version=None,
    )
    services.accept_risk(
        personas.lead,
        personas.membership(personas.lead),
        release,
        environment="production",
        item_key=run_items.get(item__text="Load test at twice the peak").key,
        reason="load test environment is down until Monday",
        expires_at=timezone.now() + timedelta(days=2),
    )
    target.refresh_from_db()
    assert target.status == "approved"
    return personas, release, target


def test_expired_acceptance_takes_the_approval_back_when_the_page_is_read(client, accepted):
    personas, release, target = accepted
    # Sessions expire over days: log in at each moment visited.
    with time_machine.travel(timezone.now() + timedelta(days=1)):
        client.force_login(personas.viewer)
        assert "data-status>Approved<" in page_of(client, personas, release)
    with time_machine.travel(timezone.now() + timedelta(days=3)):
        client.force_login(personas.viewer)
        page = page_of(client, personas, release)
    assert "data-status>In review<" in page and "data-decision>NO-GO<" in page
    assert "1 gate not cleared" in page
    assert "(expired)" in page
    target.refresh_from_db()
    assert target.status == "in_review"
    event = AuditEvent.objects.filter(verb="release.status_changed").latest("id")
    assert event.before == {"status": "approved"} and event.after == {"status": "in_review"}
    assert event.data["reason"] == "a risk acceptance expired" and event.actor is None


def test_expired_acceptance_shows_in_the_api_and_list_too(client, api_client_for, accepted):
    personas, release, target = accepted
    ci = api_client_for(personas.member)
    with time_machine.travel(timezone.now() + timedelta(days=3)):
        body = ci.get(f"/api/v1/releases/{release.pk}/").json()
        assert [t["status"] for t in body["targets"]] == ["in_review"]
        again = ci.get(f"/api/v1/projects/{personas.project.slug}/releases/?status=approved")
        assert again.json()["results"] == []
    assert (
        AuditEvent.objects.filter(
            verb="release.status_changed", data__reason="a risk acceptance expired"
        ).count()
        == 1
    )


def test_list_page_reads_the_lapsed_status_honestly(client, accepted):
    personas, release, target = accepted
    with time_machine.travel(timezone.now() + timedelta(days=3)):
        client.force_login(personas.viewer)
        response = client.get(f"/p/{personas.project.slug}/releases/?status=approved")
    assert list(response.context["page"].object_list) == []
    target.refresh_from_db()
    assert target.status == "in_review"


def test_approval_granted_after_an_acceptance_expired_stays(accepted):
    personas, release, target = accepted
    with time_machine.travel(timezone.now() + timedelta(days=3)):
        assert services.expire_lapsed_approvals(release=release) == 1
        checklists.tick(
            personas.member,
            RunItem.objects.get(
                run__in=target.runs.all(), item__text="Load test at twice the peak"
            ),
            expected_version=None,
        )
        services.refresh_approval(
            ReleaseTarget.objects.select_related("environment", "release__project").get(
                pk=target.pk
            )
        )
        target.refresh_from_db()
        assert target.status == "approved"
        # The acceptance expired before this approval; it does not take this one back.
        assert services.expire_lapsed_approvals(release=release) == 0


def test_gate_ticked_before_the_expiry_keeps_the_approval(accepted):
    personas, release, target = accepted
    checklists.tick(
        personas.member,
        RunItem.objects.get(run__in=target.runs.all(), item__text="Load test at twice the peak"),
        expected_version=None,
    )
    with time_machine.travel(timezone.now() + timedelta(days=3)):
        assert services.expire_lapsed_approvals(project=personas.project) == 0
    target.refresh_from_db()
    assert target.status == "approved"


# --- The sign-off API's body --------------------------------------------------------------------


@pytest.mark.parametrize("body", ["[1, 2]", '"approve"', "42", "null"])
def test_signoff_body_that_is_not_an_object_is_a_400(api_client_for, personas, body):
    release = make_release(personas)
    response = api_client_for(personas.member).post(
        f"/api/v1/releases/{release.pk}/signoffs/", body, content_type="application/json"
    )
    assert response.status_code == 400, response.content
    assert "Send a JSON object" in response.json()["detail"]
    assert not Signoff.objects.exists()
