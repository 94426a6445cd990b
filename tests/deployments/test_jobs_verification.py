"""Verification after each deployment, with a real Celery worker against the simulated cluster:
the environment's smoke suites run as part of the verify step, a failing one fails the
deployment (and rolls it back when the environment says so); a rollout stuck on its progress
deadline rolls back to the images that ran before."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from deployments import runner
from deployments.models import DeployedVersion, Deployment, ReleaseTarget
from monitoring import services as monitoring
from monitoring.models import CheckResult

from .jobs_helpers import (
    approved_release,
    configure,
    image_of,
    set_auto_rollback,
    wait_status,
)
from .test_deploy_worker import start

pytestmark = pytest.mark.celery_worker


def open_monitoring_to(personas, sim) -> None:  # noqa: ANN001
    """Let the staging environment's checks reach the simulated services (and nothing else)."""
    monitoring.update_environment_monitoring(
        personas.admin,
        personas.membership(personas.admin),
        personas.staging,
        allow_list=f"127.0.0.1:{sim.port}",
    )


def suite(personas, name: str, steps: list[dict], service: str | None = None):  # noqa: ANN001
    return monitoring.create_suite(
        personas.member,
        personas.membership(personas.member),
        environment="staging",
        name=name,
        service=service,
        steps=steps,
    )


def log_of(deployment: Deployment, service: str | None = None, kind: str | None = None) -> list:
    lines = deployment.log_lines.order_by("seq")
    if service is not None:
        lines = lines.filter(step__service_name=service, step__kind=kind)
    else:
        lines = lines.filter(step__isnull=True)
    return list(lines.values_list("text", flat=True))


def test_passing_smoke_suites_are_part_of_verification_and_the_deployment_succeeds(
    personas, start_sim, start_worker
):
    sim = start_sim(rollout_seconds=0.2)
    configure(personas, sim)
    open_monitoring_to(personas, sim)
    api_suite = suite(
        personas,
        "api smoke",
        [
            {
                "name": "api health",
                "url": sim.health_url("shop", "api"),
                "assertions": ["status == 200", '$.version == "1.4.0"'],
            }
        ],
        service="api",
    )
    # A suite of the environment as a whole: it runs once, after the last tier, so it sees web
    # on the new version too (after tier 1 web still runs 1.3.0 and this would fail).
    whole = suite(
        personas,
        "storefront smoke",
        [
            {
                "name": "web health",
                "url": sim.health_url("shop", "web"),
                "assertions": ["status == 200", '$.version == "1.4.0"'],
            }
        ],
    )
    release = approved_release(personas)
    start_worker()
    deployment = start(personas, release)
    done = wait_status(deployment.pk, ("succeeded", "failed", "rolled_back"))
    assert done.status == "succeeded", done.reason

    api_verify = done.steps.get(service_name="api", kind="verify")
    assert api_verify.status == "succeeded"
    assert "1 smoke suite passed" in api_verify.message
    [ran] = api_verify.detail["suites"]
    assert (ran["id"], ran["name"], ran["passed"]) == (api_suite.pk, "api smoke", True)
    api_log = log_of(done, "api", "verify")
    assert "smoke suite 'api smoke': step 'api health' passed (HTTP 200)" in api_log
    assert any(line.startswith("smoke suite 'api smoke' passed") for line in api_log)
    assert any(line.startswith("smoke suite 'storefront smoke' passed") for line in log_of(done))
    # Environment-wide suites belong to the last tier's verification.
    assert [
        s["id"] for s in done.steps.get(service_name="web", kind="verify").detail["suites"]
    ] == [whole.pk]
    results = CheckResult.objects.filter(trigger="deployment")
    assert sorted(results.values_list("health_check__name", flat=True)) == [
        "api smoke",
        "storefront smoke",
    ]
    assert set(results.values_list("passed", flat=True)) == {True}
    assert ran["result_id"] in set(results.values_list("pk", flat=True))

    # The next deployment to the environment records the one it replaces.
    assert done.replaces_id is None
    second = start(personas, approved_release(personas, version="1.4.1", commit="abcdef5678"))
    assert second.replaces_id == done.pk
    # The suites expect 1.4.0: the api suite fails, and so the deployment (auto-rollback is
    # off by default).
    failed = wait_status(second.pk, ("failed", "succeeded", "rolled_back"))
    assert failed.status == "failed"
    assert "smoke suite 'api smoke' failed" in failed.reason


def test_a_failing_smoke_suite_fails_the_deployment_and_rolls_it_back(
    personas, start_sim, start_worker
):
    sim = start_sim(rollout_seconds=0.2)
    configure(personas, sim)
    open_monitoring_to(personas, sim)
    set_auto_rollback(personas, personas.staging, True)
    suite(
        personas,
        "api contract",
        [
            {
                "name": "health is ok",
                "url": sim.health_url("shop", "api"),
                # The simulated service says "healthy": this suite's expectation is not met.
                "assertions": ["status == 200", '$.status == "ok"'],
            }
        ],
        service="api",
    )
    release = approved_release(personas)
    start_worker()
    deployment = start(personas, release)
    rolled_back = wait_status(deployment.pk, ("rolled_back", "failed", "succeeded"), timeout=60)
    assert rolled_back.status == "rolled_back", rolled_back.reason
    rollback = rolled_back.rollbacks.get()
    assert rollback.reason.startswith(
        "automatic rollback: verify failed for api: smoke suite 'api contract' failed"
    ), rollback.reason

    verify = rolled_back.steps.get(service_name="api", kind="verify")
    assert verify.status == "failed"
    assert verify.message.startswith("smoke suite 'api contract' failed: health is ok:")
    assert verify.detail["suites"][0]["passed"] is False
    api_log = log_of(rolled_back, "api", "verify")
    assert any(
        line.startswith("smoke suite 'api contract': step 'health is ok' failed (HTTP 200)")
        for line in api_log
    ), api_log
    # The health check itself passed; the suite is what failed.
    assert rolled_back.steps.get(service_name="web", kind="apply").status == "skipped"
    assert rollback.status == "succeeded"
    assert image_of(sim, "shop", "api") == "registry.example/api:1.3.0"
    assert image_of(sim, "shop", "web") == "registry.example/web:1.3.0"
    assert httpx.get(sim.health_url("shop", "api")).json()["version"] == "1.3.0"
    # No suites run for the rollback: it restores what ran before whatever they expect.
    assert not rollback.steps.filter(kind="verify", detail__has_key="suites").exists()
    assert CheckResult.objects.filter(trigger="deployment").count() == 1
    assert ReleaseTarget.objects.get(release=release, environment=personas.staging).status == (
        "rolled_back"
    )


def test_a_stuck_rollout_rolls_back_to_the_previous_images(personas, start_sim, start_worker):
    sim = start_sim(rollout_seconds=0.3, progress_deadline_seconds=1)
    configure(personas, sim)
    set_auto_rollback(personas, personas.staging, True)
    release = approved_release(personas, version="1.4.0-bad")
    start_worker()
    deployment = start(personas, release)
    rolled_back = wait_status(deployment.pk, ("rolled_back", "failed", "succeeded"), timeout=60)
    assert rolled_back.status == "rolled_back", rolled_back.reason
    wait = rolled_back.steps.get(service_name="api", kind="wait")
    assert wait.status == "failed" and "exceeded its progress deadline" in wait.message

    rollback = rolled_back.rollbacks.get()
    assert "wait for rollout failed for api" in rollback.reason
    assert "progress deadline" in rollback.reason
    assert rollback.kind == "rollback" and rollback.status == "succeeded", rollback.reason
    # The first deployment of the environment replaces none: the label is what its snapshot
    # found running, which is what the rollback restored.
    assert rolled_back.replaces_id is None and rollback.version == "1.3.0"
    undo = rollback.steps.get(service_name="api", kind="apply")
    assert undo.detail["restored_revision"] == "1"
    assert "restored the pod template of revision 1" in undo.message
    assert image_of(sim, "shop", "api") == "registry.example/api:1.3.0"
    assert image_of(sim, "shop", "web") == "registry.example/web:1.3.0"
    stuck = sim.get("deployments", "shop", "api")
    conditions = {c["type"]: c for c in stuck["status"]["conditions"]}
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert stuck["status"]["updatedReplicas"] == stuck["status"]["availableReplicas"] == 2
    assert httpx.get(sim.health_url("shop", "api")).json()["version"] == "1.3.0"
    # Only what ran is recorded as running: the stuck image never rolled out.
    running = DeployedVersion.objects.get(environment=personas.staging, service__name="api")
    assert (running.version, running.deployment_id) == ("1.3.0", rollback.pk)
    assert ReleaseTarget.objects.get(release=release, environment=personas.staging).status == (
        "rolled_back"
    )


def test_the_verification_policy_takes_a_unix_socket_database_in_its_stride(personas, settings):
    from deployments.models import DeployTarget

    row = DeployTarget(environment=personas.staging, verify_allow_list="127.0.0.1:6553")
    # Only the setting changes: the open connections keep the TCP address they were made with.
    with pytest.warns(UserWarning, match="Overriding setting DATABASES"):
        settings.DATABASES = {
            **settings.DATABASES,
            "default": {**settings.DATABASES["default"], "HOST": "/var/run/postgresql"},
        }
    policy = runner.verification_policy(row)
    assert policy.check_url("http://127.0.0.1:6553/health").allowed
    assert not policy.check_url("http://127.0.0.1:6554/health").allowed
    assert not policy.check_url("http://169.254.169.254/latest/meta-data/").allowed
    # Redis stays refused even where the allow-list would open its host.
    redis_port = urlsplit(settings.REDIS_URL).port
    opened = DeployTarget(environment=personas.staging, verify_allow_list="127.0.0.1")
    decision = runner.verification_policy(opened).check_url(f"http://127.0.0.1:{redis_port}/")
    assert not decision.allowed and decision.rule == "internal-service"
