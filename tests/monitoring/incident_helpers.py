"""Builders for incident tests: an open incident, a finished deployment with its steps."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from monitoring.incidents import services


def open_incident(personas, **overrides):  # noqa: ANN001, ANN003, ANN201
    args = {
        "title": "Checkout down",
        "severity": "P1",
        "environments": ["production"],
        "services": ["api"],
        "summary": "500s on checkout",
    }
    args.update(overrides)
    return services.open_incident(personas.member, personas.membership(personas.member), **args)


def finished_deployment(  # noqa: ANN201
    personas,  # noqa: ANN001
    environment,  # noqa: ANN001
    version: str = "1.5.0",
    *,
    minutes_ago: int = 30,
    status: str = "succeeded",
    before: str = "1.4.9",
    verify_failed: bool = False,
):
    """A deployment of the project's services that finished ``minutes_ago``, as the runner leaves
    it: a snapshot (what ran before), an applied and rolled-out step and a verification."""
    from deployments.models import Deployment, DeploymentStep, Release

    at = timezone.now() - timedelta(minutes=minutes_ago)
    release, _ = Release.objects.get_or_create(
        project=personas.project,
        version=version,
        defaults={"commit_sha": "abcdef1234", "created_at": at},
    )
    deployment = Deployment.objects.create(
        project=personas.project,
        release=release,
        environment=environment,
        strategy="kubernetes",
        status=status,
        version=version,
        requested_by=personas.member,
        created_at=at,
        status_changed_at=at,
        started_at=at,
        finished_at=at + timedelta(minutes=2),
    )
    for service in personas.project.services.all():
        rows = [
            ("snapshot", "succeeded", {"version_before": before}),
            ("apply", "succeeded", {}),
            ("wait", "succeeded", {}),
            ("verify", "failed" if verify_failed else "succeeded", {}),
        ]
        for kind, step_status, detail in rows:
            DeploymentStep.objects.create(
                deployment=deployment,
                service=service,
                service_name=service.name,
                tier=service.tier,
                kind=kind,
                status=step_status,
                started_at=at,
                finished_at=at + timedelta(minutes=1),
                message="HTTP 500 from /health" if step_status == "failed" else "",
                detail=detail,
            )
    return deployment
