"""A long rollout holds the only deployment worker; a health check asked for meanwhile still runs at
once, on the checks worker (each queue has workers of its own)."""

from __future__ import annotations

import time

import pytest

from deployments.models import Deployment, DeploymentStep
from monitoring import services as monitoring
from monitoring.lib.testing import TargetServer
from monitoring.models import CheckResult
from tests.monitoring.support import Switchable, allow, make_check

from .jobs_helpers import approved_release, configure, wait_for
from .test_deploy_worker import start

pytestmark = pytest.mark.celery_worker


def test_health_check_runs_while_the_deployment_worker_is_busy(personas, start_sim, start_worker):
    sim = start_sim(rollout_seconds=60, progress_deadline_seconds=120)
    configure(personas, sim, rollout_timeout_seconds=120)
    # The deployment worker also takes default and notifications work: only the checks queue is
    # left to the second worker, so a check routed anywhere else would wait behind the rollout.
    start_worker(queues=("deployments", "default", "notifications"))
    start_worker(queues=("checks",))
    deployment = start(personas, approved_release(personas))
    wait_for(
        lambda: DeploymentStep.objects.filter(
            deployment=deployment, kind="wait", status="running"
        ).exists(),
        what="the rollout to be under way",
    )

    with TargetServer({"/ok": Switchable(200)}) as target:
        allow(personas.staging)
        check = make_check(personas, target.url("/ok"), name="api health")
        asked = time.monotonic()
        monitoring.request_run(personas.member, personas.membership(personas.member), check)
        result = wait_for(
            lambda: CheckResult.objects.filter(health_check=check).first(),
            timeout=20,
            what="the check to run",
        )
    took = time.monotonic() - asked
    assert result.passed
    assert took < 10, took
    # The rollout is still holding its worker: the check did not wait for it.
    assert Deployment.objects.get(pk=deployment.pk).status == "running"
