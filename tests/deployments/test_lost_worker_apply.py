"""A worker killed after its patch reached the cluster but before it recorded the answer leaves the
apply step running. The rollback the reaper starts must still undo that service, or the cluster
keeps the new image while the database says the old one runs (found by
drills/kill_deployment_worker.py)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from deployments import runner
from deployments.models import DeployedVersion, Deployment, DeploymentStep
from deployments.services import jobs

from .jobs_helpers import approved_release, configure, image_of, set_auto_rollback


def test_rollback_undoes_an_apply_the_lost_worker_never_recorded(
    transactional_db, personas, start_sim, settings
):
    from deployments.strategies import KubernetesStrategy, ServicePlan

    sim = start_sim(rollout_seconds=0.2)
    configure(personas, sim)
    set_auto_rollback(personas, personas.staging, True)
    release = approved_release(personas)
    deployment, _ = jobs.start_deployment(
        personas.member, personas.membership(personas.member), release, personas.staging
    )
    jobs.claim(deployment.pk, "doomed@test")
    strategy = KubernetesStrategy(namespace="shop", api_url=sim.url, token="t")
    plans = [ServicePlan("api", 1, "api", "1.4.0"), ServicePlan("web", 2, "web", "1.4.0")]
    snapshot = strategy.snapshot(plans)
    # The worker recorded its snapshot and the start of api's apply, patched the cluster, and
    # died before its next write.
    assert strategy.apply(plans[:1], None)["api"].ok
    strategy.close()
    for plan in plans:
        DeploymentStep.objects.filter(
            deployment=deployment, service_name=plan.service_name, kind="snapshot"
        ).update(status="succeeded", detail=snapshot.outcomes[plan.service_name].facts)
    DeploymentStep.objects.filter(deployment=deployment, service_name="api", kind="apply").update(
        status="running", started_at=timezone.now()
    )
    assert image_of(sim, "shop", "api") == "registry.example/api:1.4.0"
    Deployment.objects.filter(pk=deployment.pk).update(
        heartbeat_at=timezone.now() - timedelta(minutes=5)
    )
    settings.DEPLOYMENT_HEARTBEAT_TTL_SECONDS = 60

    assert jobs.reap_deployments()["lost"] == 1
    lost = Deployment.objects.get(pk=deployment.pk)
    assert lost.status == "rolling_back"
    rollback = lost.rollbacks.get()
    # web's apply never started: only api is undone.
    assert set(rollback.steps.values_list("service_name", flat=True)) == {"api"}
    assert runner.run(rollback.pk, "next@test") == "succeeded"
    assert image_of(sim, "shop", "api") == "registry.example/api:1.3.0"
    assert Deployment.objects.get(pk=deployment.pk).status == "rolled_back"
    recorded = DeployedVersion.objects.filter(
        environment=personas.staging, service__name="api"
    ).first()
    assert recorded is None or recorded.image == "registry.example/api:1.3.0"
