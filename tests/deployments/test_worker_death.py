"""A worker dies (kill -9) in the middle of a rollout: the deployment ends failed with the reason
"worker lost" well within 90 s, never stuck in running; a redelivered task does nothing; a
worker that lost its job cannot write over it (fencing token)."""

from __future__ import annotations

import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from deployments import runner
from deployments.models import Deployment, DeploymentStep, ReleaseTarget
from deployments.services import jobs

from .jobs_helpers import (
    approved_release,
    claimed_deployment,
    configure,
    image_of,
    wait_for,
    wait_status,
)
from .test_deploy_worker import start

pytestmark = pytest.mark.celery_worker
TTL = "3"


def wait_step(deployment, service, kind, status="running"):  # noqa: ANN001
    return wait_for(
        lambda: DeploymentStep.objects.filter(
            deployment=deployment, service_name=service, kind=kind, status=status
        ).exists(),
        what=f"{service} {kind} to be {status}",
    )


def test_kill_9_mid_rollout_fails_the_deployment_with_worker_lost(
    personas, start_sim, start_worker, settings
):
    sim = start_sim(rollout_seconds=30)
    configure(personas, sim)
    release = approved_release(personas)
    worker = start_worker(DEPLOYMENT_HEARTBEAT_TTL_SECONDS=TTL)
    deployment = start(personas, release)
    wait_step(deployment, "api", "wait")
    before = Deployment.objects.get(pk=deployment.pk)
    assert before.status == "running" and before.owner.startswith("test-")

    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    killed_at = time.monotonic()
    settings.DEPLOYMENT_HEARTBEAT_TTL_SECONDS = int(TTL)

    def reaped():
        # What beat does every 15 s; here as often as the test likes.
        jobs.reap_deployments()
        return Deployment.objects.get(pk=deployment.pk).status != "running"

    wait_for(reaped, timeout=90, what="the reaper to notice the dead worker")
    took = time.monotonic() - killed_at
    assert took < 90
    lost = Deployment.objects.get(pk=deployment.pk)
    assert lost.status == "failed"
    assert lost.reason == "worker lost"
    assert lost.fencing_token == before.fencing_token + 1
    states = set(lost.steps.values_list("status", flat=True))
    assert not states & {"running", "pending"}, states
    assert lost.steps.get(service_name="api", kind="wait").status == "failed"
    assert "worker lost" in lost.log_lines.order_by("-seq").first().text
    assert ReleaseTarget.objects.get(release=release, environment=personas.staging).status == (
        "failed"
    )

    # The message comes back (acks are late): its second run finds the job finished and does
    # nothing; nothing is applied again.
    generation = sim.get("deployments", "shop", "web")["metadata"]["generation"]
    assert runner.run(deployment.pk, "redelivered@test") == "skipped"
    assert sim.get("deployments", "shop", "web")["metadata"]["generation"] == generation
    assert Deployment.objects.get(pk=deployment.pk).fencing_token == lost.fencing_token

    # The environment is free again.
    second, created = jobs.start_deployment(
        personas.member,
        personas.membership(personas.member),
        approved_release(personas, version="1.4.1"),
        personas.staging,
    )
    assert created and second.status == "queued"


def test_a_redelivered_task_does_nothing_while_a_live_worker_owns_the_job(
    personas, start_sim, start_worker
):
    sim = start_sim(rollout_seconds=1.0)
    configure(personas, sim)
    release = approved_release(personas)
    start_worker()
    deployment = start(personas, release)
    wait_step(deployment, "api", "wait")
    owner = Deployment.objects.get(pk=deployment.pk).owner
    assert runner.run(deployment.pk, "intruder@test") == "skipped"
    done = wait_status(deployment.pk, "succeeded")
    assert done.fencing_token == 1
    assert image_of(sim, "shop", "web") == "registry.example/web:1.4.0"
    assert owner and not owner.startswith("intruder")


def test_a_worker_that_lost_its_job_cannot_write_over_it(
    transactional_db, personas, start_sim, settings
):
    """Fencing: once the reaper took the job, the old owner's flushes and finish are refused."""
    sim = start_sim()
    configure(personas, sim)
    release = approved_release(personas)
    deployment, _ = jobs.start_deployment(
        personas.member, personas.membership(personas.member), release, personas.staging
    )
    claimed, token = jobs.claim(deployment.pk, "zombie@test")
    assert jobs.claim(deployment.pk, "second@test") is None
    recorder = runner.Recorder(claimed, token)
    try:
        step = DeploymentStep.objects.get(
            deployment=deployment, service_name="api", kind="snapshot"
        )
        recorder.step(step, "running")
        recorder.flush()
        assert DeploymentStep.objects.get(pk=step.pk).status == "running"
        # The worker stalls; the reaper declares it lost.
        Deployment.objects.filter(pk=deployment.pk).update(
            heartbeat_at=timezone.now() - timedelta(minutes=5)
        )
        settings.DEPLOYMENT_HEARTBEAT_TTL_SECONDS = 60
        assert jobs.reap_deployments()["lost"] == 1
        recorder.step(step, "succeeded", "written by a zombie")
        recorder.flush()
        assert recorder.lost
        with pytest.raises(runner.Aborted):
            recorder.check()
    finally:
        recorder.close()
    assert DeploymentStep.objects.get(pk=step.pk).status == "failed"
    assert jobs.finish_run(deployment.pk, token, "succeeded") is None
    assert Deployment.objects.get(pk=deployment.pk).status == "failed"


def test_the_reaper_rolls_back_what_a_lost_worker_applied_when_the_environment_says_so(
    transactional_db, personas, start_sim, settings
):
    from deployments.strategies import KubernetesStrategy, ServicePlan

    from .jobs_helpers import set_auto_rollback

    sim = start_sim(rollout_seconds=0.2)
    configure(personas, sim)
    set_auto_rollback(personas, personas.staging, True)
    release = approved_release(personas)
    deployment, _ = jobs.start_deployment(
        personas.member, personas.membership(personas.member), release, personas.staging
    )
    _, token = jobs.claim(deployment.pk, "doomed@test")
    # The worker snapshotted everything and patched api before it died.
    strategy = KubernetesStrategy(namespace="shop", api_url=sim.url, token="t")
    plans = [ServicePlan("api", 1, "api", "1.4.0"), ServicePlan("web", 2, "web", "1.4.0")]
    snapshot = strategy.snapshot(plans)
    assert strategy.apply(plans[:1], None)["api"].ok
    strategy.close()
    for plan in plans:
        DeploymentStep.objects.filter(
            deployment=deployment, service_name=plan.service_name, kind="snapshot"
        ).update(status="succeeded", detail=snapshot.outcomes[plan.service_name].facts)
    DeploymentStep.objects.filter(deployment=deployment, service_name="api", kind="apply").update(
        status="succeeded"
    )
    Deployment.objects.filter(pk=deployment.pk).update(
        heartbeat_at=timezone.now() - timedelta(minutes=5)
    )
    settings.DEPLOYMENT_HEARTBEAT_TTL_SECONDS = 60
    assert jobs.reap_deployments()["lost"] == 1
    lost = Deployment.objects.get(pk=deployment.pk)
    assert lost.status == "rolling_back"
    rollback = lost.rollbacks.get()
    assert rollback.status == "queued" and rollback.reason.startswith("automatic rollback")
    assert set(rollback.steps.values_list("service_name", flat=True)) == {"api"}
    # The next worker takes the rollback from the queue.
    assert runner.run(rollback.pk, "next@test") == "succeeded"
    assert image_of(sim, "shop", "api") == "registry.example/api:1.3.0"
    assert Deployment.objects.get(pk=deployment.pk).status == "rolled_back"
    assert ReleaseTarget.objects.get(release=release, environment=personas.staging).status == (
        "rolled_back"
    )


def test_a_queued_deployment_whose_message_was_lost_is_handed_out_again(
    personas, start_sim, settings, django_capture_on_commit_callbacks
):
    sim = start_sim()
    configure(personas, sim)
    deployment, _ = jobs.start_deployment(
        personas.member,
        personas.membership(personas.member),
        approved_release(personas),
        personas.staging,
    )
    old = timezone.now() - timedelta(minutes=10)
    Deployment.objects.filter(pk=deployment.pk).update(enqueued_at=old)
    with django_capture_on_commit_callbacks() as callbacks:
        assert jobs.reap_deployments()["requeued"] == 1
    assert len(callbacks) == 1
    assert Deployment.objects.get(pk=deployment.pk).enqueued_at > old
    assert jobs.reap_deployments()["requeued"] == 0


def test_the_reaper_is_on_beat_every_30_s_or_less(settings):
    from celery import current_app

    from deployments import tasks

    entries = [
        entry
        for entry in settings.CELERY_BEAT_SCHEDULE.values()
        if entry["task"] == tasks.reap_deployments.name
    ]
    assert len(entries) == 1, "the reaper must have exactly one beat entry"
    schedule = entries[0]["schedule"]
    seconds = schedule.total_seconds() if isinstance(schedule, timedelta) else float(schedule)
    assert 0 < seconds <= 30
    # Beat names the task by its dotted path; the worker must know it by that name.
    assert current_app.tasks[tasks.reap_deployments.name] is not None


def test_by_default_a_job_is_lost_after_60_s_without_a_heartbeat(personas, settings, monkeypatch):
    monkeypatch.delenv("DEPLOYMENT_HEARTBEAT_TTL_SECONDS", raising=False)
    if hasattr(settings, "DEPLOYMENT_HEARTBEAT_TTL_SECONDS"):
        del settings.DEPLOYMENT_HEARTBEAT_TTL_SECONDS
    assert jobs.heartbeat_ttl_seconds() == 60
    # A quarter of the TTL: three missed beats in a row still do not look like death.
    assert runner.heartbeat_interval() == 10
    claimed, _token = claimed_deployment(personas, "silent@test")
    deployment = claimed
    beat = claimed.heartbeat_at
    assert jobs.reap_deployments(now=beat + timedelta(seconds=59))["lost"] == 0
    assert Deployment.objects.get(pk=deployment.pk).status == "running"
    assert jobs.reap_deployments(now=beat + timedelta(seconds=61))["lost"] == 1
    lost = Deployment.objects.get(pk=deployment.pk)
    assert (lost.status, lost.reason) == ("failed", "worker lost")
