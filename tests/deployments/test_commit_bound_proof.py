"""Proof belongs to a commit: moving a release to another commit takes back what was proven
about the old one (deployed/verified state, acknowledgements, risk acceptances, build-bound
checklist ticks), through the Edit page's service and the PATCH API alike."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from checklists import services as checklists
from checklists.models import Item, RunItem
from deployments import services
from deployments.decision import decide
from deployments.models import Release, ReleaseTarget, RiskAcceptance, WarningAcknowledgement
from deployments.services import jobs
from releasecenter.models import AuditEvent
from releasecenter.services import Conflict

from .jobs_helpers import claimed_deployment

RUNBOOK = """# Production runbook

## Pre-flight (NO-GO)
- [ ] Database backup verified
- [ ] Change window booked

## Performance (CONDITIONAL)
- [ ] Load test at twice the peak

## Observability (WARNING)
- [ ] Dashboards updated for the new endpoints

## Housekeeping
- [ ] Tell support about the release
"""
OLD, NEW = "abcdef1234", "fedcba987654"


def _item(target, text):  # noqa: ANN001, ANN202
    return RunItem.objects.get(run__in=target.runs.all(), item__text=text)


@pytest.fixture
def verified_in_staging(personas):
    """1.4.0 verified in staging at commit OLD; production asks for staging verified first and
    has the runbook, every item of it ticked, its warning acknowledged and its risk accepted.
    "Change window booked" is marked independent of the build in the template."""
    admin_m = personas.membership(personas.admin)
    template = checklists.import_runbook(personas.admin, personas.project, RUNBOOK).template
    booked = Item.objects.get(version=template.current_version, text="Change window booked")
    checklists.update_item(personas.admin, template, booked.pk, independent_of_build=True)
    services.update_policy(
        personas.admin,
        admin_m,
        personas.production,
        checklist_templates=[template],
        require_previous_verified=True,
    )
    deployment, token = claimed_deployment(personas, "worker-a")
    jobs.mark_target_deployed(deployment.pk, token)
    jobs.finish_run(deployment.pk, token, "succeeded")
    release = Release.objects.get(pk=deployment.release_id)
    production = ReleaseTarget.objects.get(release=release, environment=personas.production)
    services.acknowledge_warning(
        personas.member,
        personas.membership(personas.member),
        release,
        environment="production",
        item_key=_item(production, "Dashboards updated for the new endpoints").key,
    )
    services.accept_risk(
        personas.lead,
        personas.membership(personas.lead),
        release,
        environment="production",
        item_key=_item(production, "Load test at twice the peak").key,
        reason="load tests ran on the previous build",
        expires_at=timezone.now() + timedelta(days=2),
    )
    for row in RunItem.objects.filter(run__in=production.runs.all()):
        checklists.tick(personas.member, row, expected_version=None)
    return personas, release, production


def test_a_new_commit_resets_staging_and_reopens_the_gates(verified_in_staging):
    personas, release, production = verified_in_staging
    staging = ReleaseTarget.objects.get(release=release, environment=personas.staging)
    assert (staging.status, staging.deployed_commit) == ("verified", OLD)
    assert "previous_environment" not in [
        r.code for r in decide(release, personas.production).reasons
    ]

    services.update_release(
        personas.member, personas.membership(personas.member), release, commit_sha=NEW
    )

    staging.refresh_from_db()
    # Back to review, where staging (which requires nothing) is approved again: not deployed.
    assert staging.status == "approved" and staging.deployed_commit == ""
    assert staging.verified_at is None
    reasons = decide(release, personas.production).reasons
    previous = [r for r in reasons if r.code == "previous_environment"]
    assert previous and "staging must be verified first" in previous[0].message
    # The gates reopened; a plain step and the item marked independent of the build kept ticks.
    states = {
        row.item.text: row.state
        for row in RunItem.objects.filter(run__in=production.runs.all()).select_related("item")
    }
    assert states == {
        "Database backup verified": "open",
        "Change window booked": "done",
        "Load test at twice the peak": "open",
        "Dashboards updated for the new endpoints": "open",
        "Tell support about the release": "done",
    }
    assert not WarningAcknowledgement.objects.filter(target=production).exists()
    assert not RiskAcceptance.objects.filter(target=production, revoked_at__isnull=True).exists()
    codes = [r.code for r in reasons]
    assert codes.count("gate_no_go") == 1 and "gate_warning" in codes
    # Every reset is a timeline entry naming both commits.
    resets = {
        e.data["environment"]: e.data
        for e in AuditEvent.objects.filter(verb="release.commit_reset", topic=release.topic)
    }
    assert set(resets) == {"staging", "production"}
    assert resets["staging"]["old_commit"] == OLD and resets["staging"]["new_commit"] == NEW
    assert resets["staging"]["summary"] == "was verified, now not deployed"
    assert resets["production"]["summary"] == (
        "3 checklist items reopened; 1 warning acknowledgement lapsed; 1 risk acceptance lapsed"
    )
    assert AuditEvent.objects.filter(verb="run.item.reopened").count() == 3


def test_the_release_page_says_what_the_change_reopened(verified_in_staging, client):
    personas, release, _ = verified_in_staging
    client.force_login(personas.member)
    slug = personas.project.slug
    edit = client.post(
        f"/p/{slug}/releases/{release.pk}/edit/",
        {"version": release.version, "commit_sha": NEW, "notes": "", "planned_start": ""},
        follow=True,
    )
    html = edit.content.decode()
    assert "The commit changed" in html
    assert "data-commit-reset" in html
    assert "was verified, now not deployed" in html
    assert "Database backup verified" in html.split("data-commit-reset")[1].split("</section>")[0]
    assert "because the commit changed from abcdef1234 to fedcba987654" in html


def test_a_commit_cannot_change_under_an_active_deployment(personas):
    deployment, _token = claimed_deployment(personas, "worker-a")
    release = Release.objects.get(pk=deployment.release_id)
    with pytest.raises(Conflict, match=f"Deployment #{deployment.pk}"):
        services.update_release(
            personas.member, personas.membership(personas.member), release, commit_sha=NEW
        )
    release.refresh_from_db()
    assert release.commit_sha == OLD and release.revision == 1


# --- PATCH /api/v1/releases/{id}/ ---------------------------------------------------------------


def test_patch_moves_the_release_to_a_new_commit_with_the_same_effects(
    verified_in_staging, api_client_for
):
    personas, release, production = verified_in_staging
    client = api_client_for(personas.member)
    response = client.patch(
        f"/api/v1/releases/{release.pk}/",
        {"commit_sha": NEW, "expected_revision": 1},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["release"]["commit_sha"] == NEW and body["release"]["revision"] == 2
    staging = next(t for t in body["release"]["targets"] if t["environment"] == "staging")
    assert staging["status"] == "approved" and staging["deployed_commit"] == ""
    assert {r["environment"]: r["summary"] for r in body["reset"]}["staging"] == (
        "was verified, now not deployed"
    )
    assert _item(production, "Database backup verified").state == "open"

    notes = client.patch(
        f"/api/v1/releases/{release.pk}/", {"notes": "built by CI #88"}, format="json"
    )
    assert notes.status_code == 200 and notes.json()["reset"] == []
    assert notes.json()["release"]["revision"] == 2


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"commit_sha": NEW, "version": "9.9.9"}, 400, "version"),
        ({"commit_sha": NEW, "revision": 7}, 400, "revision"),
        ({"commit_sha": "not-a-commit"}, 400, "commit_sha"),
        ({"commit_sha": "ABCDEF1234"}, 400, "commit_sha"),
        ({"commit_sha": NEW, "expected_revision": "two"}, 400, "expected_revision"),
        ({"commit_sha": NEW, "expected_revision": 3}, 409, "detail"),
    ],
)
def test_patch_refuses_bad_input_and_changes_nothing(
    verified_in_staging, api_client_for, body, status, field
):
    personas, release, production = verified_in_staging
    client = api_client_for(personas.member)
    before = AuditEvent.objects.count()
    response = client.patch(f"/api/v1/releases/{release.pk}/", body, format="json")
    assert response.status_code == status, response.content
    assert field in response.json()
    release.refresh_from_db()
    assert (release.commit_sha, release.version, release.revision) == (OLD, "1.4.0", 1)
    assert ReleaseTarget.objects.get(release=release, environment=personas.staging).status == (
        "verified"
    )
    assert _item(production, "Database backup verified").state == "done"
    assert AuditEvent.objects.count() == before


def test_patch_is_for_members_only(verified_in_staging, api_client_for):
    personas, release, _ = verified_in_staging
    url = f"/api/v1/releases/{release.pk}/"
    assert api_client_for(personas.outsider).patch(url, {"notes": "x"}, format="json").status_code
    assert (
        api_client_for(personas.outsider).patch(url, {"notes": "x"}, format="json").status_code
        == 404
    )
    assert api_client_for(personas.viewer).patch(
        url, {"notes": "x"}, format="json"
    ).status_code == (403)
    assert api_client_for(personas.member).put(url, {"notes": "x"}, format="json").status_code == (
        405
    )


# --- In a real browser ----------------------------------------------------------------------------

PASSWORD = "browser-test-password-2026"


@pytest.mark.browser
def test_the_release_page_shows_the_reset_after_a_commit_change(
    browser, start_web, verified_in_staging
):
    from playwright.sync_api import expect

    from tests.conftest import login_page

    personas, release, _ = verified_in_staging
    personas.lead.set_password(PASSWORD)
    personas.lead.save()
    server = start_web()
    release_url = f"{server.url}/p/{personas.project.slug}/releases/{release.pk}/"
    page = login_page(browser, server.url, personas.lead.username, PASSWORD)
    page.goto(release_url)
    staging = page.locator("[data-environment=staging] [data-status]")
    expect(staging).to_have_text("Verified")
    expect(page.locator("[data-commit-reset]")).to_have_count(0)

    page.goto(release_url + "edit/")
    page.fill("input[name=commit_sha]", NEW)
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_url(release_url)

    expect(staging).not_to_have_text("Verified")
    reset = page.locator("[data-commit-reset]")
    expect(reset).to_contain_text(f"The commit changed from {OLD} to {NEW[:12]}")
    expect(reset.locator("[data-environment=staging]")).to_contain_text(
        "was verified, now not deployed"
    )
    production = reset.locator("[data-environment=production]")
    expect(production).to_contain_text("3 checklist items reopened")
    expect(production.locator(".reopened li")).to_have_text(
        [
            "Database backup verified",
            "Load test at twice the peak",
            "Dashboards updated for the new endpoints",
        ]
    )
    expect(
        page.locator("[data-environment=production] [data-code=previous_environment]")
    ).to_have_count(1)
    page.screenshot(path="/tmp/gates-reset.png", full_page=True)
    page.context.close()
