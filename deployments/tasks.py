"""Deployment tasks. Thin: they take ids and call the runner or a service.

``run_deployment`` is safe to run twice: the runner claims the job with a conditional update and a
fencing token, so a second delivery of the message (acks are late, so a worker that dies gives it
back) finds the job running or finished and does nothing.
"""

from celery import shared_task
from django.conf import settings

from . import runner
from .services import jobs


@shared_task(
    bind=True,
    time_limit=settings.LONGEST_JOB_SECONDS + 60,
    soft_time_limit=settings.LONGEST_JOB_SECONDS,
    # A failed job is recorded as failed by the runner; retrying could only find it finished.
    max_retries=0,
)
def run_deployment(self, deployment_id: int) -> str:  # noqa: ANN001
    owner = f"{self.request.hostname or 'worker'}/{self.request.id or 'local'}"
    return runner.run(deployment_id, owner)


@shared_task(time_limit=60, soft_time_limit=50)
def reap_deployments() -> dict[str, int]:
    """On beat: fail jobs whose worker stopped heartbeating; requeue jobs left queued."""
    return jobs.reap_deployments()
