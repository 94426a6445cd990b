"""Builders shared by the deployment-job tests: a cluster target, an approved release, waiting."""

from __future__ import annotations

import time
from collections.abc import Callable

from deployments import services
from deployments.models import Deployment
from deployments.services import jobs
from releasecenter.models import Service

IMAGE = "registry.example/{name}:{version}"
TOKEN = "sekret-cluster-token-4711"


def add_tier(personas, name: str, tier: int) -> Service:  # noqa: ANN001
    from releasecenter import services as core

    return core.create_service(
        personas.admin, personas.membership(personas.admin), name=name, tier=tier
    )


def configure(
    personas,  # noqa: ANN001
    sim,  # noqa: ANN001
    namespace: str = "shop",
    *,
    environment=None,  # noqa: ANN001
    version: str = "1.3.0",
    replicas: int = 2,
    **fields,  # noqa: ANN003
):
    """Seed the cluster with the project's services at `version` and point the environment at it."""
    environment = environment or personas.staging
    for service in personas.project.services.all():
        sim.add_deployment(
            namespace, service.name, IMAGE.format(name=service.name, version=version), replicas
        )
    options = {
        "strategy": "kubernetes",
        "api_url": sim.url,
        "bearer_token": TOKEN,
        "namespace": namespace,
        "health_url_template": sim.url + "/_services/{namespace}/{deployment}",
        "verify_allow_list": f"127.0.0.1:{sim.port}",
        "verify_timeout_seconds": 5,
        "rollout_timeout_seconds": 30,
        **fields,
    }
    return services.save_deploy_target(
        personas.admin, personas.membership(personas.admin), environment, **options
    )


def approved_release(personas, version: str = "1.4.0", commit: str = "abcdef1234"):  # noqa: ANN001
    member_m = personas.membership(personas.member)
    release = services.create_release(personas.member, member_m, version=version, commit_sha=commit)
    services.submit_for_review(personas.member, member_m, release)
    return release


def claimed_deployment(personas, worker: str):  # noqa: ANN001, ANN201
    """A deployment of an approved 1.4.0 to staging, claimed by `worker` as a worker would claim
    it: (the deployment, its fencing token). The target is never contacted (nothing listens on
    port 9): no worker takes this job, the test plays the worker itself."""
    jobs.save_deploy_target(
        personas.admin,
        personas.membership(personas.admin),
        personas.staging,
        strategy="kubernetes",
        api_url="http://127.0.0.1:9",
        namespace="shop",
    )
    deployment, _ = jobs.start_deployment(
        personas.member,
        personas.membership(personas.member),
        approved_release(personas),
        personas.staging,
    )
    return jobs.claim(deployment.pk, worker)


def set_auto_rollback(personas, environment, on: bool = True) -> None:  # noqa: ANN001
    services.update_policy(
        personas.admin, personas.membership(personas.admin), environment, auto_rollback=on
    )


def wait_for(predicate: Callable[[], object], timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_status(deployment_id: int, statuses: tuple[str, ...] | str, timeout: float = 40):
    statuses = (statuses,) if isinstance(statuses, str) else statuses

    def reached():
        d = Deployment.objects.get(pk=deployment_id)
        return d if d.status in statuses else None

    try:
        return wait_for(reached, timeout, f"deployment {deployment_id} to be {statuses}")
    except AssertionError:
        d = Deployment.objects.get(pk=deployment_id)
        steps = list(d.steps.values_list("service_name", "kind", "status", "message"))
        raise AssertionError(f"deployment is {d.status} ({d.reason}); steps: {steps}") from None


def image_of(sim, namespace: str, name: str) -> str:  # noqa: ANN001
    deployment = sim.get("deployments", namespace, name)
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]
