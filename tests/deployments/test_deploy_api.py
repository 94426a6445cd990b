"""Starting deployments through the API and the pages: the gate with its reasons, a lead's
override, one active deployment per environment under concurrency, idempotency keys, access."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from deployments import services
from deployments.models import Deployment, Override, ReleaseTarget
from releasecenter.models import AuditEvent
from tests.threads import run_together

from .jobs_helpers import TOKEN, approved_release, configure


@pytest.fixture
def ready(personas, start_sim):
    sim = start_sim()
    configure(personas, sim)
    return personas, approved_release(personas)


def url(release) -> str:  # noqa: ANN001
    return f"/api/v1/releases/{release.pk}/deployments/"


def test_start_answers_201_with_the_deployment_and_its_steps(ready, api_client_for):
    personas, release = ready
    client = api_client_for(personas.member)
    response = client.post(url(release), {"environment": "staging"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["version"] == "1.4.0"
    assert body["environment"] == "staging" and body["requested_by"] == "mia-member"
    detail = client.get(f"/api/v1/deployments/{body['id']}/").json()
    assert detail["status"] == "queued"
    assert [(s["service"], s["kind"]) for s in detail["steps"]] == [
        ("api", "snapshot"),
        ("api", "apply"),
        ("api", "wait"),
        ("api", "verify"),
        ("web", "snapshot"),
        ("web", "apply"),
        ("web", "wait"),
        ("web", "verify"),
    ]
    assert ReleaseTarget.objects.get(release=release, environment=personas.staging).status == (
        "deploying"
    )
    assert AuditEvent.objects.filter(topic=f"deployment:{body['id']}", verb="deployment.created")


def test_a_no_go_is_refused_with_its_reasons_and_a_lead_may_override(ready, api_client_for):
    personas, release = ready
    services.update_policy(
        personas.admin,
        personas.membership(personas.admin),
        personas.staging,
        min_notice=timedelta(hours=2),
    )
    response = api_client_for(personas.member).post(
        url(release), {"environment": "staging"}, format="json"
    )
    assert response.status_code == 409
    body = response.json()
    assert body["decision"] == "no-go"
    assert [r["code"] for r in body["reasons"]] == ["notice"]
    assert not Deployment.objects.exists()

    engineer_override = api_client_for(personas.member).post(
        url(release),
        {"environment": "staging", "override_reason": "hotfix for the outage"},
        format="json",
    )
    assert engineer_override.status_code == 403
    lead = api_client_for(personas.lead).post(
        url(release),
        {"environment": "staging", "override_reason": "hotfix for the outage INC-7"},
        format="json",
    )
    assert lead.status_code == 201, lead.content
    assert lead.json()["override_reason"] == "hotfix for the outage INC-7"
    override = Override.objects.get()
    assert Deployment.objects.get().override == override
    assert override.reasons[0]["code"] == "notice"


def test_an_override_never_deploys_into_a_locked_environment(ready, api_client_for):
    personas, release = ready
    services.lock_environment(
        personas.member, personas.membership(personas.member), personas.staging, "INC-7 ongoing"
    )
    lead = api_client_for(personas.lead)
    response = lead.post(
        url(release),
        {"environment": "staging", "override_reason": "hotfix for the outage INC-7"},
        format="json",
    )
    assert response.status_code == 409, response.content
    body = response.json()
    assert body["code"] == "locked"
    assert body["lock"]["locked_by"] == "mia-member"
    assert body["lock"]["reason"] == "INC-7 ongoing"
    assert "locked" in [r["code"] for r in body["reasons"]]
    assert not Deployment.objects.exists() and not Override.objects.exists()
    assert not AuditEvent.objects.filter(verb="release.overridden").exists()


def test_a_lock_is_released_only_by_its_holder_or_an_admin_with_a_reason(ready, api_client_for):
    personas, release = ready
    services.lock_environment(
        personas.member, personas.membership(personas.member), personas.staging, "INC-7 ongoing"
    )
    lock_url = f"/api/v1/projects/{personas.project.slug}/environments/staging/lock/"
    lead = api_client_for(personas.lead)
    refused = lead.delete(lock_url, {"reason": "I think it is fine"}, format="json")
    assert refused.status_code == 403 and "mia-member" in str(refused.json())
    holder = api_client_for(personas.member)
    no_reason = holder.delete(lock_url, {}, format="json")
    assert no_reason.status_code == 400 and "reason" in no_reason.json()
    assert lead.get(lock_url).json()["locked"] is True
    admin = api_client_for(personas.admin)
    released = admin.delete(lock_url, {"reason": "INC-7 resolved"}, format="json")
    assert released.status_code == 200 and released.json()["locked"] is False
    event = AuditEvent.objects.get(verb="environment.unlocked")
    assert event.actor == personas.admin
    assert event.after["reason"] == "INC-7 resolved"
    assert event.before["reason"] == "INC-7 ongoing"


def test_an_override_never_starts_beside_an_active_deployment(ready, api_client_for):
    personas, release = ready
    first = api_client_for(personas.member).post(
        url(release), {"environment": "staging"}, format="json"
    )
    assert first.status_code == 201
    second = api_client_for(personas.lead).post(
        url(release),
        {"environment": "staging", "override_reason": "hotfix for the outage INC-7"},
        format="json",
    )
    assert second.status_code == 409
    assert "deployment_active" in [r["code"] for r in second.json()["reasons"]]
    assert Deployment.objects.count() == 1 and not Override.objects.exists()


def test_bad_input_is_a_clear_error_and_changes_nothing(ready, api_client_for):
    personas, release = ready
    client = api_client_for(personas.member)
    assert client.post(url(release), {}, format="json").status_code == 400
    response = client.post(url(release), {"environment": "moon"}, format="json")
    assert response.status_code == 400 and "moon" in str(response.json())
    other = approved_release(personas, version="2.0.0")
    services.update_release(
        personas.member, personas.membership(personas.member), other, commit_sha="fedcba987654"
    )
    stale = client.post(
        url(other), {"environment": "staging", "expected_commit": "abcdef1234"}, format="json"
    )
    assert stale.status_code == 409
    assert not Deployment.objects.exists()


def test_outsiders_get_404_and_viewers_403(ready, api_client_for):
    personas, release = ready
    outsider = api_client_for(personas.outsider)
    assert outsider.post(url(release), {"environment": "staging"}, format="json").status_code == 404
    viewer = api_client_for(personas.viewer)
    assert viewer.post(url(release), {"environment": "staging"}, format="json").status_code == 403
    created = api_client_for(personas.member).post(url(release), {"environment": "staging"})
    pk = created.json()["id"]
    for path in ("", "rollback/", "cancel/"):
        method = outsider.get if not path else outsider.post
        assert method(f"/api/v1/deployments/{pk}/{path}").status_code == 404
    assert viewer.post(f"/api/v1/deployments/{pk}/cancel/").status_code == 403
    assert viewer.get(f"/api/v1/deployments/{pk}/").status_code == 200


def test_idempotency_key_replays_and_refuses_a_different_body(ready, api_client_for):
    personas, release = ready
    client = api_client_for(personas.member)
    headers = {"HTTP_IDEMPOTENCY_KEY": "ci-run-881"}
    first = client.post(url(release), {"environment": "staging"}, format="json", **headers)
    again = client.post(url(release), {"environment": "staging"}, format="json", **headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    other = client.post(url(release), {"environment": "production"}, format="json", **headers)
    assert other.status_code == 422
    assert Deployment.objects.count() == 1


def _concurrently(count: int, call) -> list:  # noqa: ANN001
    def work(index: int, barrier: threading.Barrier):  # noqa: ANN202
        barrier.wait()
        return call(index)

    return run_together(count, work)


def test_five_identical_concurrent_requests_make_one_deployment(
    transactional_db, personas, start_sim
):
    sim = start_sim()
    configure(personas, sim)
    release = approved_release(personas)
    from releasecenter import services as core

    _, raw = core.create_api_token(personas.member, "ci")

    def post(_index: int):  # noqa: ANN202
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}", HTTP_IDEMPOTENCY_KEY="pipeline-42")
        response = client.post(url(release), {"environment": "staging"}, format="json")
        return response.status_code, response.json().get("id")

    results = _concurrently(5, post)
    assert Deployment.objects.count() == 1
    ids = {pk for _, pk in results}
    assert ids == {Deployment.objects.get().pk}
    assert sorted(code for code, _ in results) == [200, 200, 200, 200, 201]


def test_concurrent_deployments_to_one_environment_one_runs_the_others_are_refused(
    transactional_db, personas, start_sim
):
    sim = start_sim()
    configure(personas, sim)
    releases = [approved_release(personas, version=f"1.{i}.0") for i in range(5)]

    def deploy(index: int):  # noqa: ANN202
        try:
            deployment, _ = services.start_deployment(
                personas.member,
                personas.membership(personas.member),
                releases[index],
                personas.staging,
            )
        except services.DeployRefused as refused:
            return [r.code for r in refused.decision.reasons], refused.decision.reasons[0].message
        return "started", deployment.pk

    results = _concurrently(5, deploy)
    started = [r for r in results if r[0] == "started"]
    refused = [r for r in results if r[0] != "started"]
    assert len(started) == 1, results
    assert Deployment.objects.filter(environment=personas.staging).count() == 1
    assert len(refused) == 4
    for codes, message in refused:
        assert codes == ["deployment_active"]
        assert f"Deployment #{started[0][1]}" in message and "staging" in message


def test_credentials_are_never_shown_back(ready, client, api_client_for):
    personas, release = ready
    client.force_login(personas.admin)
    page = client.get(f"/p/{personas.project.slug}/environments/staging/").content.decode()
    assert TOKEN not in page
    assert 'data-secret="bearer_token">set<' in page
    api = api_client_for(personas.admin).get(
        f"/api/v1/projects/{personas.project.slug}/environments/staging/deploy-target/"
    )
    assert api.status_code == 200
    assert TOKEN not in api.content.decode()
    assert api.json()["bearer_token_state"] == "set"
    events = AuditEvent.objects.filter(verb="environment.deploy_target_saved")
    assert events and all(TOKEN not in str(e.after) + str(e.before) for e in events)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT bearer_token FROM deployments_deploytarget")
        stored = cursor.fetchone()[0]
    assert TOKEN not in stored and stored.startswith("gAAAA")


def test_the_openapi_schema_describes_deployments_without_warnings():
    import subprocess
    import sys

    from tests.conftest import ROOT, _child_env

    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate"],
        cwd=ROOT,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    schema = result.stdout
    for path in (
        "/api/v1/releases/{release_id}/deployments/:",
        "/api/v1/deployments/{id}/:",
        "/api/v1/deployments/{id}/rollback/:",
        "/api/v1/deployments/{id}/cancel/:",
        "/api/v1/deployments/{id}/steps/:",
        "/api/v1/projects/{slug}/environments/{name}/lock/:",
    ):
        assert path in schema, path
    mine = ("deployments/jobs_api.py", "Deployment", "StepReport", "DeployRefusal")
    warnings = [line for line in result.stderr.splitlines() if "Warning" in line]
    assert not [w for w in warnings if any(name in w for name in mine)], warnings
    assert "StatusB70Enum" not in schema
