"""Releases, sign-offs and the decision through services, the API and the pages."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from datetime import time as t
from datetime import timedelta

import pytest
import time_machine as tm
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.utils import timezone

from deployments import services
from deployments.decision import decide
from deployments.models import Override, Release, ReleaseTarget, Signoff
from releasecenter import services as core
from releasecenter.models import AuditEvent, Membership
from releasecenter.services import Conflict
from tests.threads import run_together

PROD_ROLES = [("Backend Engineer", 1), ("Security Review", 1), ("Technical Lead", 1)]


@pytest.fixture
def team(personas):
    """The shop project with a production policy needing three roles, and people to fill them."""
    admin_m = personas.membership(personas.admin)
    services.set_signoff_requirements(personas.admin, admin_m, personas.production, PROD_ROLES)
    User = get_user_model()  # noqa: N806
    for name, role, caps in [
        ("bea-backend", "engineer", ["Backend Engineer"]),
        ("sam-security", "engineer", ["Security Review"]),
        ("tia-techlead", "lead", ["Technical Lead", "Security Review"]),
    ]:
        User.objects.create_user(name, password="x")
        core.add_member(personas.admin, admin_m, username=name, role=role, signoff_capacities=caps)
    return personas


def member(personas, username):
    user = get_user_model().objects.get(username=username)
    return user, Membership.objects.get(user=user, project=personas.project)


def make_release(personas, version="1.4.0", **kwargs):
    return services.create_release(
        personas.member,
        personas.membership(personas.member),
        version=version,
        commit_sha=kwargs.pop("commit_sha", "a1b2c3d4e5f6"),
        **kwargs,
    )


def sign_all(personas, release, environment="production"):
    for username, role in [
        ("bea-backend", "Backend Engineer"),
        ("sam-security", "Security Review"),
        ("tia-techlead", "Technical Lead"),
    ]:
        user, m = member(personas, username)
        services.sign_off(
            user, m, release, environment=environment, role=role, decision="approve", comment=""
        )


# --- Creating releases ------------------------------------------------------------------------


def test_api_creates_release_with_targets_in_promotion_order(api_client_for, team):
    client = api_client_for(team.member)
    response = client.post(
        f"/api/v1/projects/{team.project.slug}/releases/",
        {"version": "2.0.0", "commit_sha": "deadbeef1234", "notes": "Checkout redesign"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["id"] and body["version"] == "2.0.0"
    assert [t["environment"] for t in body["targets"]] == ["staging", "production"]
    assert {t["status"] for t in body["targets"]} == {"draft"}
    again = client.post(
        f"/api/v1/projects/{team.project.slug}/releases/",
        {"version": "2.0.0", "commit_sha": "deadbeef1234"},
        format="json",
    )
    assert again.status_code == 409
    assert Release.objects.filter(version="2.0.0").count() == 1
    assert AuditEvent.objects.filter(verb="release.created", object_id=str(body["id"])).exists()


def test_api_refuses_bad_release_input_clearly(api_client_for, team):
    client = api_client_for(team.member)
    url = f"/api/v1/projects/{team.project.slug}/releases/"
    bad_sha = client.post(url, {"version": "2.0.1", "commit_sha": "not-hex!"}, format="json")
    assert bad_sha.status_code == 400
    assert "commit_sha" in bad_sha.json()
    bad_env = client.post(
        url, {"version": "2.0.1", "commit_sha": "abcdef1", "environments": ["qa"]}, format="json"
    )
    assert bad_env.status_code == 400
    assert "qa" in str(bad_env.json())
    assert not Release.objects.filter(version="2.0.1").exists()


def test_outsider_sees_no_release(api_client_for, team):
    release = make_release(team)
    client = api_client_for(team.outsider)
    assert client.get(f"/api/v1/releases/{release.pk}/").status_code == 404
    assert (
        client.get(f"/api/v1/releases/{release.pk}/decision?environment=production").status_code
        == 404
    )
    assert (
        client.post(
            f"/api/v1/releases/{release.pk}/signoffs/",
            {"environment": "production", "role": "Backend Engineer", "decision": "approve"},
            format="json",
        ).status_code
        == 404
    )
    assert client.get(f"/api/v1/projects/{team.project.slug}/releases/").status_code == 404


def test_viewer_may_not_create_releases(api_client_for, team):
    client = api_client_for(team.viewer)
    response = client.post(
        f"/api/v1/projects/{team.project.slug}/releases/",
        {"version": "9.9.9", "commit_sha": "abcdef1"},
        format="json",
    )
    assert response.status_code == 403


# --- Sign-offs and the decision ---------------------------------------------------------------


def test_decision_lists_missing_roles_then_goes_when_all_sign(api_client_for, team):
    release = make_release(team)
    services.submit_for_review(team.member, team.membership(team.member), release)
    client = api_client_for(team.member)
    body = client.get(f"/api/v1/releases/{release.pk}/decision?environment=production").json()
    assert body["decision"] == "no-go"
    assert [r["code"] for r in body["reasons"]] == ["signoff_missing"] * 3
    assert "Security Review needs 1 more (0 of 1)" in body["reasons"][1]["message"]

    for username, role in [
        ("bea-backend", "Backend Engineer"),
        ("sam-security", "Security Review"),
        ("tia-techlead", "Technical Lead"),
    ]:
        user, _m = member(team, username)
        response = api_client_for(user).post(
            f"/api/v1/releases/{release.pk}/signoffs/",
            {
                "environment": "production",
                "role": role,
                "decision": "approve",
                "comment": "looks good",
            },
            format="json",
        )
        assert response.status_code == 201, response.json()
    body = client.get(f"/api/v1/releases/{release.pk}/decision?environment=production").json()
    assert body == {
        "decision": "go",
        "reasons": [],
        "environment": "production",
        "requester": None,
    }
    target = ReleaseTarget.objects.get(release=release, environment__name="production")
    assert target.status == "approved" and target.approved_at is not None


def test_decision_for_my_request_is_what_the_deploy_gate_says(api_client_for, team):
    release = make_release(team)
    services.submit_for_review(team.member, team.membership(team.member), release)
    sign_all(team, release)
    bea, bea_m = member(team, "bea-backend")
    ci = api_client_for(bea)
    url = f"/api/v1/releases/{release.pk}/decision?environment=production"
    assert ci.get(url).json()["decision"] == "go"
    mine = ci.get(url + "&requester=me").json()
    assert mine["decision"] == "no-go" and mine["requester"] == "bea-backend"
    assert [r["message"] for r in mine["reasons"]] == [
        "Sign-off missing: Backend Engineer needs 1 more (0 of 1)"
    ]
    # The gate a deployment request passes through gives the same answer.
    with pytest.raises(services.DeployRefused) as refused:
        with transaction.atomic():
            services.check_deploy_allowed(bea, bea_m, release, team.production)
    assert [r.message for r in refused.value.decision.reasons] == [
        r["message"] for r in mine["reasons"]
    ]
    services.set_requester_counts_for_quorum(team.admin, team.membership(team.admin), True)
    assert ci.get(url + "&requester=me").json()["decision"] == "go"
    bad = ci.get(url + "&requester=alice-admin")
    assert bad.status_code == 400 and "requester=me" in bad.json()["requester"]


def test_quorum_rule_is_changed_by_admins_only_and_audited(team):
    with pytest.raises(PermissionDenied):
        services.set_requester_counts_for_quorum(team.lead, team.membership(team.lead), True)
    team.project.refresh_from_db()
    assert team.project.requester_counts_for_quorum is False
    services.set_requester_counts_for_quorum(team.admin, team.membership(team.admin), True)
    team.project.refresh_from_db()
    assert team.project.requester_counts_for_quorum is True
    event = AuditEvent.objects.get(verb="project.quorum_rule_changed")
    assert event.actor == team.admin and event.project_id == team.project.pk
    assert event.before == {"requester_counts_for_quorum": False}
    assert event.after == {"requester_counts_for_quorum": True}
    # Saying it again changes nothing and records nothing.
    services.set_requester_counts_for_quorum(team.admin, team.membership(team.admin), True)
    assert AuditEvent.objects.filter(verb="project.quorum_rule_changed").count() == 1
    with pytest.raises(ValidationError):
        services.set_requester_counts_for_quorum(team.admin, team.membership(team.admin), "no")


def test_signoff_needs_the_capacity_403(api_client_for, team):
    release = make_release(team)
    response = api_client_for(team.member).post(
        f"/api/v1/releases/{release.pk}/signoffs/",
        {"environment": "production", "role": "Security Review", "decision": "approve"},
        format="json",
    )
    assert response.status_code == 403
    assert "Security Review" in response.json()["detail"]
    assert not Signoff.objects.exists()


def test_one_person_fills_one_role_409(api_client_for, team):
    release = make_release(team)
    user, _m = member(team, "tia-techlead")
    client = api_client_for(user)
    url = f"/api/v1/releases/{release.pk}/signoffs/"
    first = client.post(
        url,
        {"environment": "production", "role": "Technical Lead", "decision": "approve"},
        format="json",
    )
    assert first.status_code == 201
    second = client.post(
        url,
        {"environment": "production", "role": "Security Review", "decision": "approve"},
        format="json",
    )
    assert second.status_code == 409
    assert "one person fills one role" in second.json()["detail"]
    assert Signoff.objects.filter(user=user).count() == 1


def test_rejection_blocks_until_withdrawn(team):
    release = make_release(team)
    services.submit_for_review(team.member, team.membership(team.member), release)
    sign_all(team, release)
    user, m = member(team, "sam-security")
    with pytest.raises(Exception, match="Say why"):
        services.sign_off(
            user,
            m,
            release,
            environment="production",
            role="Security Review",
            decision="reject",
            comment="",
        )
    rejection = services.sign_off(
        user,
        m,
        release,
        environment="production",
        role="Security Review",
        decision="reject",
        comment="CVE-2026-1234 unpatched",
    )
    decision = decide(release, team.production)
    assert [r.code for r in decision.reasons] == ["signoff_rejected", "signoff_missing"]
    assert "CVE-2026-1234" in decision.reasons[0].message
    target = ReleaseTarget.objects.get(release=release, environment=team.production)
    assert target.status == "blocked"
    services.withdraw_signoff(user, m, rejection)
    services.sign_off(
        user, m, release, environment="production", role="Security Review", decision="approve"
    )
    assert decide(release, team.production).go
    target.refresh_from_db()
    assert target.status == "approved"


def test_new_commit_makes_signoffs_stale(team):
    release = make_release(team)
    services.submit_for_review(team.member, team.membership(team.member), release)
    sign_all(team, release)
    assert decide(release, team.production).go
    services.update_release(
        team.member, team.membership(team.member), release, commit_sha="ffffeeee0000"
    )
    decision = decide(release, team.production)
    assert decision.decision == "no-go"
    assert [r.code for r in decision.reasons] == ["signoff_missing"] * 3
    stale = Signoff.objects.filter(target__release=release)
    assert stale.count() == 3
    assert all(s.stale_at is not None for s in stale)
    assert all("commit changed from a1b2c3d4e5f6 to ffffeeee0000" in s.stale_reason for s in stale)
    release.refresh_from_db()
    assert release.revision == 2
    target = ReleaseTarget.objects.get(release=release, environment=team.production)
    assert target.status == "in_review"


def test_requester_does_not_count_towards_quorum_unless_allowed(team):
    release = make_release(team)
    sign_all(team, release)
    bea, bea_m = member(team, "bea-backend")
    decision = decide(release, team.production, requester=bea)
    assert [r.code for r in decision.reasons] == ["signoff_missing"]
    assert "Backend Engineer" in decision.reasons[0].message
    services.set_requester_counts_for_quorum(team.admin, team.membership(team.admin), True)
    release = Release.objects.select_related("project").get(pk=release.pk)
    assert decide(release, team.production, requester=bea).go


def test_deploy_gate_refuses_with_reasons_and_lead_may_override(team):
    release = make_release(team)
    with pytest.raises(services.DeployRefused) as refused:
        with transaction.atomic():
            services.check_deploy_allowed(
                team.member, team.membership(team.member), release, team.production
            )
    assert [r.code for r in refused.value.decision.reasons] == ["signoff_missing"] * 3
    with pytest.raises(Exception, match="lead"):
        services.check_deploy_allowed(
            team.member,
            team.membership(team.member),
            release,
            team.production,
            override_reason="we need this out now",
        )
    with transaction.atomic():
        override = services.check_deploy_allowed(
            team.lead,
            team.membership(team.lead),
            release,
            team.production,
            override_reason="Hotfix for checkout outage",
        )
    assert isinstance(override, Override)
    assert len(override.reasons) == 3
    assert release.follow_ups.get().override == override
    assert AuditEvent.objects.filter(verb="release.overridden", actor=team.lead).exists()


def test_locked_environment_blocks(team):
    release = make_release(team, environments=["staging"])
    services.lock_environment(
        team.member, team.membership(team.member), team.staging, "database migration running"
    )
    decision = decide(release, team.staging)
    assert [r.code for r in decision.reasons] == ["locked"]
    assert "database migration running" in decision.reasons[0].message
    with pytest.raises(Conflict):
        services.lock_environment(team.lead, team.membership(team.lead), team.staging, "again")
    services.unlock_environment(
        team.member, team.membership(team.member), team.staging, "migration finished"
    )
    assert decide(release, team.staging).go


def test_freeze_window_blocks_at_frozen_time(team):
    admin_m = team.membership(team.admin)

    services.add_time_window(
        team.admin,
        admin_m,
        team.staging,
        kind="freeze",
        label="Weekend freeze",
        start_weekday=4,
        start_time=t(16, 0),
        end_weekday=0,
        end_time=t(8, 0),
        timezone="UTC",
    )
    release = make_release(team, environments=["staging"])
    with tm.travel("2026-11-20 17:00:00+00:00", tick=False):
        decision = decide(release, team.staging)
    assert [r.code for r in decision.reasons] == ["freeze"]
    assert "until Mon 2026-11-23 08:00 UTC" in decision.reasons[0].message
    with tm.travel("2026-11-24 10:00:00+00:00", tick=False):
        assert decide(release, team.staging).go


def test_previous_environment_must_be_verified(team):
    admin_m = team.membership(team.admin)
    services.update_policy(team.admin, admin_m, team.production, require_previous_verified=True)
    services.set_signoff_requirements(team.admin, admin_m, team.production, [])
    release = make_release(team)
    decision = decide(release, team.production)
    assert [r.code for r in decision.reasons] == ["previous_environment"]
    message = decision.reasons[0].message
    assert message.startswith("staging must be verified first: ")
    # What "verified" takes, and where to make it so.
    assert "deployed there successfully and its verification passed (it is draft)" in message
    assert decision.reasons[0].link.endswith(f"/releases/{release.pk}/#environment-staging")


def test_status_transitions_are_checked_and_audited(team):
    release = make_release(team, environments=["staging"])
    target = ReleaseTarget.objects.get(release=release)
    with pytest.raises(Exception, match="cannot go from draft to deployed"):
        services.transition(target, "deployed", team.member)
    services.transition(target, "in_review", team.member)
    event = AuditEvent.objects.filter(verb="release.status_changed").latest("id")
    assert event.before == {"status": "draft"} and event.after == {"status": "in_review"}
    assert target.in_review_at is not None


# --- Concurrency ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_signoffs_are_all_recorded(personas):
    admin_m = personas.membership(personas.admin)
    roles = [(f"Reviewer {i}", 1) for i in range(10)]
    services.set_signoff_requirements(personas.admin, admin_m, personas.production, roles)
    User = get_user_model()  # noqa: N806
    people = []
    for i in range(10):
        User.objects.create_user(f"rev{i}", password="x")
        core.add_member(
            personas.admin,
            admin_m,
            username=f"rev{i}",
            role="engineer",
            signoff_capacities=[f"Reviewer {i}"],
        )
        people.append(User.objects.get(username=f"rev{i}"))
    release = make_release(personas, environments=["production"])
    services.submit_for_review(personas.member, personas.membership(personas.member), release)

    def sign(i: int, barrier: threading.Barrier) -> None:
        m = Membership.objects.get(user=people[i], project=personas.project)
        barrier.wait()
        services.sign_off(
            people[i],
            m,
            release,
            environment="production",
            role=f"Reviewer {i}",
            decision="approve",
        )

    run_together(10, sign)
    assert Signoff.objects.filter(target__release=release, stale_at__isnull=True).count() == 10
    assert decide(release, personas.production).go
    assert ReleaseTarget.objects.get(release=release).status == "approved"


@pytest.mark.django_db(transaction=True)
def test_deploy_requested_while_commit_changes_is_refused(team):
    release = make_release(team)
    sign_all(team, release)
    assert decide(release, team.production).go
    changing = threading.Event()
    outcome = {}

    def change_commit():
        with transaction.atomic():
            services.update_release(
                team.member, team.membership(team.member), release, commit_sha="0123456789ab"
            )
            changing.set()
            time.sleep(0.5)  # hold the release row while the deployment request arrives
        connection.close()

    def request_deploy():
        changing.wait(5)
        try:
            with transaction.atomic():
                services.check_deploy_allowed(
                    team.member, team.membership(team.member), release, team.production
                )
            outcome["result"] = "approved"
        except services.DeployRefused as exc:
            outcome["result"] = [r.code for r in exc.decision.reasons]
        finally:
            connection.close()

    threads = [threading.Thread(target=change_commit), threading.Thread(target=request_deploy)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcome["result"] == ["signoff_missing"] * 3


# --- Pages ------------------------------------------------------------------------------------


def test_release_page_shows_decision_matrix_and_timeline(client, team):
    release = make_release(team)
    services.submit_for_review(team.member, team.membership(team.member), release)
    user, m = member(team, "bea-backend")
    services.sign_off(
        user, m, release, environment="production", role="Backend Engineer", decision="approve"
    )
    services.update_release(
        team.member, team.membership(team.member), release, commit_sha="beefbeef0001"
    )
    client.force_login(team.viewer)
    page = client.get(f"/p/{team.project.slug}/releases/{release.pk}/").content.decode()
    assert "Release 1.4.0" in page
    assert "NO-GO" in page and "Sign-off missing: Security Review" in page
    assert "stale: commit changed from a1b2c3d4e5f6 to beefbeef0001" in page
    assert "release.signed_off" in page and "release.updated" in page


def test_release_page_outsider_404(client, team):
    release = make_release(team)
    client.force_login(team.outsider)
    assert client.get(f"/p/{team.project.slug}/releases/{release.pk}/").status_code == 404
    assert client.get(f"/p/elsewhere/releases/{release.pk}/").status_code == 404


def test_signoff_through_the_page(client, team):
    release = make_release(team)
    user, _m = member(team, "bea-backend")
    client.force_login(user)
    response = client.post(
        f"/p/{team.project.slug}/releases/{release.pk}/signoff/",
        {
            "environment": "production",
            "role": "Backend Engineer",
            "decision": "approve",
            "comment": "ok",
        },
        follow=True,
    )
    assert "Signed off as Backend Engineer" in response.content.decode()
    excluded = "If you request the deployment yourself, your own sign-off does not count"
    assert excluded in response.content.decode()
    refused = client.post(
        f"/p/{team.project.slug}/releases/{release.pk}/signoff/",
        {"environment": "production", "role": "Technical Lead", "decision": "approve"},
        follow=True,
    )
    assert (
        "do not hold the &#x27;Technical Lead&#x27; sign-off capacity" in refused.content.decode()
    )
    services.set_requester_counts_for_quorum(team.admin, team.membership(team.admin), True)
    page = client.get(f"/p/{team.project.slug}/releases/{release.pk}/").content.decode()
    assert "You signed as Backend Engineer." in page and excluded not in page


BUNDLE_RUNBOOK = """# Go-live

## Proof (NO-GO)
- [ ] Database backup verified
- [ ] Rollback plan reviewed

## Performance (CONDITIONAL)
- [ ] Load test at twice the peak
"""
BACKUP_LOG = b"pg_dump finished: 1284 MB, checksum 9f2c\n"


def test_compliance_bundle_contains_the_record(client, team, settings, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from checklists import services as checklists
    from checklists.models import RunItem

    # Evidence goes to a local folder of this test, not to a shared media root.
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    template = checklists.import_runbook(team.admin, team.project, BUNDLE_RUNBOOK).template
    services.update_policy(
        team.admin, team.membership(team.admin), team.production, checklist_templates=[template]
    )
    release = make_release(team)
    run = ReleaseTarget.objects.get(release=release, environment=team.production).runs.get()

    def row(text):
        return RunItem.objects.get(run=run, item__text=text)

    backup = checklists.tick(team.member, row("Database backup verified"), expected_version=None)
    evidence = checklists.add_evidence_file(
        team.member, backup, SimpleUploadedFile("backup.log", BACKUP_LOG)
    )
    services.accept_risk(
        team.lead,
        team.membership(team.lead),
        release,
        environment="production",
        item_key=row("Load test at twice the peak").key,
        reason="load test environment is down until Monday",
        expires_at=timezone.now() + timedelta(days=2),
    )
    sign_all(team, release)
    with transaction.atomic():
        services.check_deploy_allowed(
            team.lead,
            team.membership(team.lead),
            release,
            team.production,
            override_reason="Hotfix for the checkout outage",
        )

    client.force_login(team.viewer)
    response = client.get(f"/p/{team.project.slug}/releases/{release.pk}/compliance.zip")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    names = set(archive.namelist())
    assert {"report.json", "report.md"} <= names
    evidence_path = f"evidence/production/run-{run.pk}/{backup.pk}/{evidence.pk}-{evidence.name}"
    assert evidence_path in names, names
    assert archive.read(evidence_path) == BACKUP_LOG

    report = json.loads(archive.read("report.json"))
    assert report["release"]["version"] == "1.4.0"
    production = next(e for e in report["environments"] if e["environment"] == "production")
    assert {(s["role"], s["user"], s["decision"]) for s in production["signoffs"]} == {
        ("Backend Engineer", "bea-backend", "approve"),
        ("Security Review", "sam-security", "approve"),
        ("Technical Lead", "tia-techlead", "approve"),
    }
    [acceptance] = production["risk_acceptances"]
    assert acceptance["item"] == "Load test at twice the peak"
    assert acceptance["by"] == "liam-lead" and "down until Monday" in acceptance["reason"]
    [override] = production["overrides"]
    assert override["by"] == "liam-lead"
    assert override["reason"] == "Hotfix for the checkout outage"
    assert [r["message"] for r in override["reasons_overridden"]] == [
        "NO-GO gate not ticked: Rollback plan reviewed"
    ]
    [run_report] = production["checklist_runs"]
    items = {i["text"]: i for i in run_report["items"]}
    ticked = items["Database backup verified"]
    assert ticked["state"] == "done" and ticked["done_by"] == "mia-member"
    assert ticked["done_at"] is not None
    assert [e["name"] for e in ticked["evidence"]] == ["backup.log"]
    assert items["Rollback plan reviewed"]["state"] == "open"
    assert report["follow_ups"][0]["text"].startswith("Review the override of a no-go")

    markdown = archive.read("report.md").decode()
    assert f"### Checklist: {run.title}" in markdown
    assert f"- [x] [NO-GO] Database backup verified — mia-member at {ticked['done_at']}" in markdown
    assert "- [ ] [NO-GO] Rollback plan reviewed" in markdown
    assert "  - evidence: backup.log (41 bytes), by mia-member at" in markdown
    assert "Security Review: sam-security approved" in markdown
    assert (
        f"- Load test at twice the peak — accepted by liam-lead at {acceptance['at']}, "
        f"until {acceptance['expires_at']}: load test environment is down until Monday"
    ) in markdown
    assert (
        "overrode a no-go at" in markdown
        and "Hotfix for the checkout outage** (the decision said: NO-GO gate not ticked: "
        "Rollback plan reviewed)"
        in markdown
    )


def test_acceptance_needs_future_expiry(team):
    release = make_release(team)
    with pytest.raises(Exception, match="expire in the future"):
        services.accept_risk(
            team.lead,
            team.membership(team.lead),
            release,
            environment="production",
            item_key="1",
            reason="load test deferred to next week",
            expires_at=timezone.now() - timedelta(hours=1),
        )
