"""Demo data for deployment jobs: Acme Shop's staging and production point at the simulated
cluster that the demo's Procfile starts (``manage.py simcluster --port $SIM_PORT --seed-project
acme-shop``, found at ``SIMCLUSTER_URL``), and every service runs the previous release, 1.3.0, in
both. Idempotent, and silent on a second run (it writes no event when nothing changes)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from .models import DeployedVersion, DeployTarget

BASELINE_VERSION = "1.3.0"
IMAGE = "registry.acme.example/{service}:{version}"


def namespace_for(environment) -> str:  # noqa: ANN001
    return f"{environment.project.slug}-{environment.name}"


def sim_url() -> str:
    """Where the demo's simulated cluster listens: scripts/demo exports it from SIM_PORT."""
    return os.environ.get("SIMCLUSTER_URL", "http://127.0.0.1:8001").rstrip("/")


def seed(project) -> None:  # noqa: ANN001
    url = sim_url()
    where = {
        "api_url": url,
        "health_url_template": url + "/_services/{namespace}/{deployment}",
        "verify_allow_list": url.split("://", 1)[-1],
    }
    for environment in project.environments.all():
        # Bootstrap data written directly, like the core's seed: there is no admin actor yet.
        target, created = DeployTarget.objects.get_or_create(
            environment=environment,
            defaults={
                "strategy": DeployTarget.Strategy.KUBERNETES,
                # The simulated cluster takes any token; a real one is stored the same way.
                "bearer_token": "demo-cluster-token",
                "namespace": namespace_for(environment),
                **where,
                "verify_timeout_seconds": 30,
                # Well above the cluster's progress deadline (20 s in the Procfile), so a "bad"
                # tag fails as on a real cluster, with ProgressDeadlineExceeded, and not by
                # running into Release Center's own timeout first.
                "rollout_timeout_seconds": 120,
            },
        )
        if (
            not created
            and target.api_url != url
            and urlsplit(target.api_url).hostname == urlsplit(url).hostname
        ):
            # The demo's cluster came up on another port this time: follow it.
            DeployTarget.objects.filter(pk=target.pk).update(**where)
        for service in project.services.all():
            DeployedVersion.objects.get_or_create(
                environment=environment,
                service=service,
                defaults={
                    "version": BASELINE_VERSION,
                    "image": IMAGE.format(service=service.name, version=BASELINE_VERSION),
                    "revision": "1",
                },
            )
