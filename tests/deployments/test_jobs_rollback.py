"""The version label of a rollback says what it restores: the version the undone deployment's
snapshot found, or, when its services ran different versions, which state it goes back to."""

from __future__ import annotations

import pytest

from deployments.models import Deployment, DeploymentStep
from deployments.services import jobs

from .jobs_helpers import claimed_deployment


@pytest.fixture
def failed_deployment(personas):  # noqa: ANN001, ANN201
    """A finished deployment of 1.4.0 whose steps say it snapshotted and changed both services
    (written directly: no worker runs here, and none is asked to, nothing is committed)."""
    deployment, token = claimed_deployment(personas, "test@local")
    steps = DeploymentStep.objects.filter(deployment=deployment)
    steps.filter(kind="apply").update(status="succeeded")
    assert jobs.finish_run(deployment.pk, token, "failed", "verify failed") is not None
    return deployment


def snapshot_found(deployment: Deployment, **versions: str) -> None:
    for service, version in versions.items():
        DeploymentStep.objects.filter(
            deployment=deployment, service_name=service, kind="snapshot"
        ).update(status="succeeded", detail={"version_before": version})


def rollback_of(personas, deployment: Deployment) -> Deployment:  # noqa: ANN001
    return jobs.request_rollback(personas.member, personas.membership(personas.member), deployment)


def test_the_rollback_is_labelled_with_the_version_its_snapshot_found(personas, failed_deployment):
    snapshot_found(failed_deployment, api="1.3.0", web="1.3.0")
    assert failed_deployment.replaces_id is None
    assert rollback_of(personas, failed_deployment).version == "1.3.0"


def test_services_on_different_versions_give_the_state_it_restores(personas, failed_deployment):
    snapshot_found(failed_deployment, api="1.3.0", web="1.2.9")
    rollback = rollback_of(personas, failed_deployment)
    assert rollback.version == f"as before #{failed_deployment.pk}"
    assert rollback.version != "previous"


def test_without_a_snapshot_version_the_replaced_deployment_names_it(personas, failed_deployment):
    earlier = Deployment.objects.create(
        project=personas.project,
        release=failed_deployment.release,
        environment=personas.staging,
        strategy="kubernetes",
        status="succeeded",
        version="1.2.0",
    )
    Deployment.objects.filter(pk=failed_deployment.pk).update(replaces=earlier)
    failed_deployment.refresh_from_db()
    assert rollback_of(personas, failed_deployment).version == "1.2.0"
