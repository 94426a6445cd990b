"""The pages of deployment jobs: list with filters and pagination, a deployment, an environment
(what runs where, lock and unlock, the deploy target form), the Deploy button and its start view."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.template.loader import render_to_string
from django.test.utils import CaptureQueriesContext

from deployments import services
from deployments.decision import decide
from deployments.models import (
    DeployedVersion,
    Deployment,
    DeploymentStep,
    Override,
    ReleaseTarget,
)
from releasecenter.models import AuditEvent

from .jobs_helpers import TOKEN, approved_release, configure


@pytest.fixture
def ready(personas, start_sim):
    sim = start_sim()
    configure(personas, sim)
    return personas, approved_release(personas)


def make_deployments(personas, count: int) -> list[Deployment]:  # noqa: ANN001
    """Finished deployments, written directly: these tests look at pages, not at running."""
    made = []
    for i in range(count):
        release = approved_release(personas, version=f"0.{i}.0")
        deployment, _ = services.start_deployment(
            personas.member, personas.membership(personas.member), release, personas.staging
        )
        Deployment.objects.filter(pk=deployment.pk).update(status="succeeded")
        made.append(deployment)
    return made


def test_list_filters_paginates_and_keeps_queries_flat(ready, client):
    personas, _ = ready
    make_deployments(personas, 27)
    client.force_login(personas.viewer)
    base = f"/p/{personas.project.slug}/deployments/"
    first = client.get(base)
    assert first.status_code == 200
    html = first.content.decode()
    assert html.count("data-deployment=") == 25 and "Page 1 of 2" in html
    assert client.get(base + "?page=2").content.decode().count("data-deployment=") == 2
    filtered = client.get(base + "?version=0.1&status=succeeded").content.decode()
    assert filtered.count("data-deployment=") == 11  # 0.1.0 and 0.10.0 ... 0.19.0
    assert "No deployment matches" in client.get(base + "?environment=production").content.decode()
    with CaptureQueriesContext(connection) as few:
        client.get(base + "?page=2")
    with CaptureQueriesContext(connection) as many:
        client.get(base)
    assert len(many) == len(few)
    fragment = client.get(base, HTTP_HX_REQUEST="true").content.decode()
    assert fragment.startswith('<div id="deployment-table"')


def test_outsiders_see_no_deployment_pages(ready, client):
    personas, _ = ready
    deployment = make_deployments(personas, 1)[0]
    client.force_login(personas.outsider)
    slug = personas.project.slug
    for path in (
        "deployments/",
        f"deployments/{deployment.pk}/",
        "environments/staging/",
        f"deployments/{deployment.pk}/snapshot.yaml",
    ):
        assert client.get(f"/p/{slug}/{path}").status_code == 404, path
    assert client.post(f"/p/{slug}/deployments/{deployment.pk}/cancel/").status_code == 404


def test_deployment_page_shows_tiers_steps_progress_and_log(ready, client):
    personas, release = ready
    deployment, _ = services.start_deployment(
        personas.member, personas.membership(personas.member), release, personas.staging
    )
    wait = DeploymentStep.objects.get(deployment=deployment, service_name="api", kind="wait")
    wait.status, wait.detail = "running", {"desired": 2, "updated": 1, "available": 0}
    wait.save()
    deployment.log_lines.create(seq=1, text="patched api", service_name="api")
    client.force_login(personas.member)
    page = client.get(f"/p/{personas.project.slug}/deployments/{deployment.pk}/")
    html = page.content.decode()
    assert f'data-live-topic="deployment:{deployment.pk}"' in html
    assert 'data-tier="1"' in html and 'data-tier="2"' in html
    assert f'data-wait-step="{wait.pk}"' in html
    assert 'data-bar="updated" max="2" value="1"' in html
    assert 'data-last-seq="1"' in html and "patched api" in html
    assert 'data-action="cancel"' in html and 'data-confirm="Cancel deployment' in html
    assert "js/deployments.js" in html
    header = client.get(
        f"/p/{personas.project.slug}/deployments/{deployment.pk}/", HTTP_HX_REQUEST="true"
    ).content.decode()
    assert header.startswith('<div id="deployment-state"')
    assert 'data-tier="2"' in header
    client.force_login(personas.viewer)
    assert 'data-action="cancel"' not in client.get(page.request["PATH_INFO"]).content.decode()


def test_cancel_from_the_page_cancels_a_queued_deployment(ready, client):
    personas, release = ready
    deployment, _ = services.start_deployment(
        personas.member, personas.membership(personas.member), release, personas.staging
    )
    client.force_login(personas.member)
    response = client.post(f"/p/{personas.project.slug}/deployments/{deployment.pk}/cancel/")
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.status == "cancelled"
    assert set(deployment.steps.values_list("status", flat=True)) == {"cancelled"}
    # Cancelling a deployment returns the release to review; its gates still approve it.
    assert ReleaseTarget.objects.get(release=release, environment=personas.staging).status == (
        "approved"
    )


def test_environment_page_lock_unlock_and_what_runs_where(ready, client):
    personas, release = ready
    api = personas.project.services.get(name="api")
    DeployedVersion.objects.create(environment=personas.staging, service=api, version="1.3.0")
    client.force_login(personas.member)
    base = f"/p/{personas.project.slug}/environments/staging/"
    html = client.get(base).content.decode()
    assert 'data-service="api"' in html and "1.3.0" in html
    assert 'data-locked="no"' in html
    assert 'data-release="1.4.0"' in html and 'data-action="deploy"' in html
    client.post(base + "lock/", {"reason": "INC-9: payments down"})
    html = client.get(base).content.decode()
    assert 'data-locked="yes"' in html and "INC-9: payments down" in html
    assert decide(release, personas.staging).reasons[0].code == "locked"
    assert 'data-action="deploy"' not in html
    assert client.post(base + "lock/", {"reason": ""}).status_code == 302
    client.post(base + "unlock/")  # no reason: the lock holds
    assert 'data-locked="yes"' in client.get(base).content.decode()
    client.post(base + "unlock/", {"reason": "payments are back"})
    assert 'data-locked="no"' in client.get(base).content.decode()
    event = AuditEvent.objects.get(verb="environment.unlocked")
    assert event.actor == personas.member and event.after["reason"] == "payments are back"


def test_only_admins_change_the_deploy_target_and_secrets_stay_hidden(ready, client):
    personas, _ = ready
    base = f"/p/{personas.project.slug}/environments/staging/"
    client.force_login(personas.member)
    assert "target-form" not in client.get(base).content.decode()
    assert client.post(base + "deploy-target/", {"strategy": "kubernetes"}).status_code == 403
    client.force_login(personas.admin)
    html = client.get(base).content.decode()
    assert "Currently set; leave empty to keep it." in html and TOKEN not in html
    form = {
        "strategy": "kubernetes",
        "api_url": "http://127.0.0.1:9/",
        "namespace": "shop",
        "verify_tls": "on",
        "health_url_template": "http://127.0.0.1:9/{nope}",
        "verify_timeout_seconds": "5",
        "rollout_timeout_seconds": "30",
    }
    bad = client.post(base + "deploy-target/", form)
    assert bad.status_code == 400 and "placeholders" in bad.content.decode()
    form["health_url_template"] = "http://127.0.0.1:9/_services/{namespace}/{deployment}"
    form["deployment_names"] = "api = api-server"
    assert client.post(base + "deploy-target/", form).status_code == 302
    target = personas.staging.deploy_target
    target.refresh_from_db()
    assert target.bearer_token == TOKEN  # kept: an empty secret field keeps the stored one
    assert target.deployment_names == {"api": "api-server"}
    form["clear_secrets"] = ["bearer_token"]
    client.post(base + "deploy-target/", form)
    target.refresh_from_db()
    assert target.bearer_token == ""


def test_deploy_button_fragment_and_start_view(ready, client, rf):
    personas, release = ready
    target = ReleaseTarget.objects.get(release=release, environment=personas.staging)
    slug = personas.project.slug

    def button(user):  # noqa: ANN001, ANN202
        request = rf.get(f"/p/{slug}/releases/{release.pk}/")
        request.user = user
        return render_to_string(
            "deployments/_deploy_button.html",
            {
                "release": release,
                "target": target,
                "decision": decide(release, personas.staging),
                "membership": personas.membership(user),
            },
            request=request,
        )

    assert f'action="/p/{slug}/releases/{release.pk}/deploy/staging/"' in button(personas.member)
    assert 'data-action="deploy"' not in button(personas.viewer)
    services.lock_environment(
        personas.admin, personas.membership(personas.admin), personas.staging, "freeze"
    )
    # A lock is absolute: not even a lead is offered the override.
    assert 'data-action="override"' not in button(personas.lead)
    assert "data-locked-hint" in button(personas.lead)
    client.force_login(personas.lead)
    refused = client.post(
        f"/p/{slug}/releases/{release.pk}/deploy/staging/",
        {"override_reason": "customer escalation, approved by CTO"},
        follow=True,
    )
    assert "Not deployed to staging" in refused.content.decode()
    assert "freeze" in refused.content.decode()
    assert not Deployment.objects.exists() and not Override.objects.exists()
    services.unlock_environment(
        personas.admin, personas.membership(personas.admin), personas.staging, "freeze over"
    )
    services.update_policy(
        personas.admin,
        personas.membership(personas.admin),
        personas.staging,
        min_notice=timedelta(hours=1),
    )
    assert 'data-action="override"' in button(personas.lead)
    assert 'data-action="override"' not in button(personas.member)

    client.force_login(personas.member)
    refused = client.post(f"/p/{slug}/releases/{release.pk}/deploy/staging/", follow=True)
    assert "Not deployed to staging" in refused.content.decode()
    assert "notice" in refused.content.decode()
    assert not Deployment.objects.exists()
    client.force_login(personas.lead)
    started = client.post(
        f"/p/{slug}/releases/{release.pk}/deploy/staging/",
        {"override_reason": "customer escalation, approved by CTO"},
    )
    deployment = Deployment.objects.get()
    assert started["Location"] == f"/p/{slug}/deployments/{deployment.pk}/"
    assert deployment.override.reason == "customer escalation, approved by CTO"


def test_overview_shows_versions_and_the_last_deployment(ready, client):
    personas, _ = ready
    deployment = make_deployments(personas, 1)[0]
    api = personas.project.services.get(name="api")
    DeployedVersion.objects.create(environment=personas.staging, service=api, version="0.0.0")
    client.force_login(personas.viewer)
    html = client.get(f"/p/{personas.project.slug}/").content.decode()
    assert "0.0.0 on 1 service" in html
    assert f"#{deployment.pk} deploy 0.0.0: succeeded" in html


def test_only_the_holder_or_an_admin_is_offered_unlock(ready, client):
    personas, _release = ready
    services.lock_environment(
        personas.member, personas.membership(personas.member), personas.staging, "INC-9"
    )
    base = f"/p/{personas.project.slug}/environments/staging/"
    client.force_login(personas.lead)
    html = client.get(base).content.decode()
    assert 'data-action="unlock"' not in html
    assert "Only mia-member or a project admin may unlock it." in html
    client.post(base + "unlock/", {"reason": "looks fine to me"})
    assert 'data-locked="yes"' in client.get(base).content.decode()
    client.force_login(personas.admin)
    assert 'data-action="unlock"' in client.get(base).content.decode()
