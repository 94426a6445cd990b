"""Deployments run by a real Celery worker against the simulated cluster, through the real
kubernetes client: tiers in order, failure and automatic rollback, one-click rollback, cancel."""

from __future__ import annotations

import re

import httpx
import pytest

from deployments import services
from deployments.models import DeployedVersion, Deployment, DeploymentStep, ReleaseTarget

from .jobs_helpers import (
    add_tier,
    approved_release,
    configure,
    image_of,
    set_auto_rollback,
    wait_for,
    wait_status,
)

pytestmark = pytest.mark.celery_worker


def start(personas, release, environment=None, user=None):  # noqa: ANN001
    user = user or personas.member
    deployment, created = services.start_deployment(
        user, personas.membership(user), release, environment or personas.staging
    )
    assert created
    return deployment


def test_happy_path_rolls_out_three_tiers_in_order(personas, start_sim, start_worker):
    add_tier(personas, "mailer", 3)
    sim = start_sim(rollout_seconds=0.3)
    configure(personas, sim)
    release = approved_release(personas)
    start_worker()
    deployment = start(personas, release)
    done = wait_status(deployment.pk, "succeeded")

    for name in ("api", "web", "mailer"):
        assert image_of(sim, "shop", name) == f"registry.example/{name}:1.4.0"
        assert httpx.get(sim.health_url("shop", name)).json()["version"] == "1.4.0"
    steps = list(done.steps.order_by("tier", "service_name", "id"))
    assert {s.status for s in steps} == {"succeeded"}
    by = {(s.service_name, s.kind): s for s in steps}
    # A tier starts only once the tier before it is rolled out and healthy.
    assert by[("api", "verify")].finished_at <= by[("web", "apply")].started_at
    assert by[("web", "verify")].finished_at <= by[("mailer", "apply")].started_at
    assert by[("api", "wait")].detail["updated"] == by[("api", "wait")].detail["available"] == 2
    assert by[("api", "snapshot")].detail["image_before"] == "registry.example/api:1.3.0"
    assert by[("api", "wait")].detail["revision_after"] == "2"
    target = ReleaseTarget.objects.get(release=release, environment=personas.staging)
    assert target.status == "verified"
    versions = dict(
        DeployedVersion.objects.filter(environment=personas.staging).values_list(
            "service__name", "version"
        )
    )
    assert versions == {"api": "1.4.0", "web": "1.4.0", "mailer": "1.4.0"}
    assert done.snapshot_path
    from django.core.files.storage import default_storage

    with default_storage.open(done.snapshot_path) as handle:
        snapshot = handle.read().decode()
    assert "registry.example/api:1.3.0" in snapshot and "1.4.0" not in snapshot
    log = list(done.log_lines.values_list("text", flat=True))
    assert any("patched api to registry.example/api:1.4.0" in line for line in log)
    assert done.heartbeat_at is not None and done.owner == ""


def test_failed_rollout_ends_failed_and_leaves_later_tiers_alone(personas, start_sim, start_worker):
    sim = start_sim(rollout_seconds=0.3, progress_deadline_seconds=1)
    configure(personas, sim)
    set_auto_rollback(personas, personas.staging, False)
    release = approved_release(personas, version="1.4.0-bad")
    start_worker()
    deployment = start(personas, release)
    failed = wait_status(deployment.pk, "failed")
    assert "progress deadline" in failed.reason
    assert image_of(sim, "shop", "web") == "registry.example/web:1.3.0"
    states = dict(failed.steps.filter(service_name="web").values_list("kind", "status"))
    assert states == {
        "snapshot": "succeeded",
        "apply": "skipped",
        "wait": "skipped",
        "verify": "skipped",
    }
    assert not failed.rollbacks.exists()
    assert (
        ReleaseTarget.objects.get(release=release, environment=personas.staging).status == "failed"
    )


def test_failed_verification_rolls_back_when_the_environment_says_so(
    personas, start_sim, start_worker
):
    sim = start_sim(rollout_seconds=0.2)
    configure(personas, sim, verify_timeout_seconds=2)
    set_auto_rollback(personas, personas.staging, True)
    release = approved_release(personas, version="1.4.0-unhealthy")
    start_worker()
    deployment = start(personas, release)
    rolled_back = wait_status(deployment.pk, ("rolled_back", "failed"), timeout=60)
    assert rolled_back.status == "rolled_back", rolled_back.reason
    rollback = rolled_back.rollbacks.get()
    assert rollback.kind == "rollback" and rollback.status == "succeeded"
    assert image_of(sim, "shop", "api") == "registry.example/api:1.3.0"
    assert httpx.get(sim.health_url("shop", "api")).json() == {
        "status": "healthy",
        "version": "1.3.0",
        "image": "registry.example/api:1.3.0",
    }
    # Tier 2 was never applied, so the rollback had nothing to do there.
    assert list(rollback.steps.order_by().values_list("service_name", flat=True).distinct()) == [
        "api"
    ]
    assert ReleaseTarget.objects.get(release=release, environment=personas.staging).status == (
        "rolled_back"
    )
    assert (
        DeployedVersion.objects.get(environment=personas.staging, service__name="api").version
        == "1.3.0"
    )


def test_rollback_restores_the_previous_image(personas, start_sim, start_worker, api_client_for):
    sim = start_sim(rollout_seconds=0.2)
    configure(personas, sim)
    release = approved_release(personas)
    start_worker()
    deployment = start(personas, release)
    wait_status(deployment.pk, "succeeded")
    assert image_of(sim, "shop", "web") == "registry.example/web:1.4.0"

    client = api_client_for(personas.member)
    response = client.post(f"/api/v1/deployments/{deployment.pk}/rollback/", {}, format="json")
    assert response.status_code == 201, response.content
    rollback_id = response.json()["id"]
    assert response.json()["rollback_of"] == deployment.pk
    # The first deployment of the environment replaced none; its snapshot says what ran.
    assert response.json()["version"] == "1.3.0"
    wait_status(rollback_id, "succeeded")
    for name in ("api", "web"):
        assert image_of(sim, "shop", name) == f"registry.example/{name}:1.3.0"
        assert httpx.get(sim.health_url("shop", name)).json()["version"] == "1.3.0"
    # The controller reused the old ReplicaSet under a new revision, as `rollout undo` does.
    sets = sim.replicasets_of("shop", "web")
    assert len(sets) == 2
    assert Deployment.objects.get(pk=deployment.pk).status == "rolled_back"
    assert ReleaseTarget.objects.get(release=release, environment=personas.staging).status == (
        "rolled_back"
    )


def test_cancel_stops_after_the_current_step(
    personas, start_sim, start_worker, api_client_for, client
):
    sim = start_sim(rollout_seconds=2.0)
    configure(personas, sim)
    for service in personas.project.services.all():
        # What the dashboard knew before: both services on 1.3.0, as the demo seeds it.
        DeployedVersion.objects.create(
            environment=personas.staging,
            service=service,
            version="1.3.0",
            image=f"registry.example/{service.name}:1.3.0",
        )
    release = approved_release(personas)
    start_worker()
    deployment = start(personas, release)
    wait_for(
        lambda: DeploymentStep.objects.filter(
            deployment=deployment, service_name="api", kind="wait", status="running"
        ).exists(),
        what="the api rollout to be watched",
    )
    response = api_client_for(personas.member).post(f"/api/v1/deployments/{deployment.pk}/cancel/")
    assert response.status_code == 202, response.content
    cancelled = wait_status(deployment.pk, "cancelled")
    steps = dict(((s.service_name, s.kind), s.status) for s in cancelled.steps.all())
    # The step in flight finished; nothing after it ran; nothing is left running.
    assert steps[("api", "wait")] == "succeeded"
    assert steps[("api", "verify")] == "cancelled"
    assert steps[("web", "apply")] == "cancelled"
    assert "running" not in steps.values() and "pending" not in steps.values()
    assert image_of(sim, "shop", "web") == "registry.example/web:1.3.0"
    assert cancelled.reason == "cancelled by mia-member"
    # The release goes back to review, where its gates and sign-offs approve it again.
    target = ReleaseTarget.objects.get(release=release, environment=personas.staging)
    assert target.status == "approved"
    # What runs where says what the cluster runs: api rolled out to 1.4.0 (and is marked as not
    # verified), web still on 1.3.0.
    assert image_of(sim, "shop", "api") == "registry.example/api:1.4.0"
    running = {
        row.service.name: row
        for row in DeployedVersion.objects.filter(environment=personas.staging).select_related(
            "service"
        )
    }
    assert (running["api"].version, running["api"].image) == ("1.4.0", "registry.example/api:1.4.0")
    assert running["api"].deployment_id == deployment.pk
    assert running["web"].version == "1.3.0" and running["web"].deployment_id is None
    client.force_login(personas.viewer)
    page = client.get("/p/shop/environments/staging/")
    assert page.status_code == 200
    rows = {
        name: re.sub(r"\s+", " ", html)
        for name, html in re.findall(
            r'<tr data-service="([^"]+)">(.*?)</tr>', page.content.decode(), re.S
        )
    }
    assert "<strong data-version>1.4.0</strong>" in rows["api"]
    assert "rolled out, not verified (deployment cancelled)" in rows["api"]
    assert "<strong data-version>1.3.0</strong>" in rows["web"]
    assert "data-unverified" not in rows["web"]
