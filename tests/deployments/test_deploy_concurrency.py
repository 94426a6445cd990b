"""Concurrent API requests against a real worker on PostgreSQL: the request that wins the
environment is claimed and run at once, while the losers are still being refused.

The API held the release's row lock joined with its project's row (a FOR UPDATE without `of=`
locks every joined table); the worker's claim then needed a key-share lock on the project for
its event row and deadlocked against it, leaving the accepted deployment queued."""

from __future__ import annotations

import threading
import time

import pytest
from rest_framework.test import APIClient

from deployments.models import Deployment
from releasecenter import services as core
from tests.threads import run_together

from .jobs_helpers import approved_release, configure, wait_status

pytestmark = pytest.mark.celery_worker


def _wait_until_the_worker_answers(timeout: float = 30) -> None:
    """The race needs a worker that is already consuming when the winner commits."""
    import os
    import socket

    from releasecenter.celery import app

    name = f"test-{os.getpid()}-0@{socket.gethostname()}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.control.ping(destination=[name], timeout=0.5):
            return
    raise AssertionError(f"worker {name} did not answer within {timeout}s")


def test_five_parallel_deploys_one_accepted_and_run_by_the_worker(
    personas, start_sim, start_worker
):
    sim = start_sim(rollout_seconds=0.2)
    configure(personas, sim)
    release = approved_release(personas)
    _, raw = core.create_api_token(personas.member, "ci")
    start_worker()
    _wait_until_the_worker_answers()

    def post(index: int, barrier: threading.Barrier):  # noqa: ANN202
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}", HTTP_IDEMPOTENCY_KEY=f"run-{index}")
        barrier.wait()
        response = client.post(
            f"/api/v1/releases/{release.pk}/deployments/", {"environment": "staging"}, format="json"
        )
        return response.status_code, response.json()

    results = run_together(5, post)
    assert sorted(code for code, _ in results) == [201, 409, 409, 409, 409], results
    accepted = next(body for code, body in results if code == 201)
    assert Deployment.objects.count() == 1
    # Claimed within seconds, not after the reaper's two minutes; then rolled out to the end.
    wait_status(accepted["id"], ("running", "succeeded"), timeout=15)
    done = wait_status(accepted["id"], "succeeded", timeout=60)
    assert done.started_at is not None
