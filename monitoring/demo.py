"""Demo and benchmark data for monitoring. Every step is idempotent.

The demo's simulated cluster (``python -m deployments.sim``, at ``SIMCLUSTER_URL``) serves each
service's health at ``$SIMCLUSTER_URL/_services/<namespace>/<deployment>/health``; the demo deploys
Acme Shop's services into the namespace ``acme-shop-<environment>``. Those are loopback
addresses, so each environment's allow-list opens 127.0.0.1 — and nothing else.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

from django.utils import timezone

from releasecenter.models import Environment, Project, Service

from . import heartbeats
from .models import Check, EnvironmentMonitoring, PerformanceTarget
from .services import clean_assertions


def sim_url() -> str:
    """The simulated cluster the demo deploys to (deployments.jobs_demo reads the same variable,
    which scripts/demo exports from SIM_PORT)."""
    return os.environ.get("SIMCLUSTER_URL", "http://127.0.0.1:8001").rstrip("/")


DEMO_CHECKED_SERVICES = ["auth-service", "catalog-service", "payment-service", "storefront-web"]
HEALTHY = ["status == 200", '$.status == "healthy"', "latency < 500"]
NIGHTLY_CLEANUP = "nightly cleanup"


def sim_health_url(project: Project, environment: Environment, service: str) -> str:
    return f"{sim_url()}/_services/{project.slug}-{environment.name}/{service}/health"


def _follow_the_cluster(project: Project) -> None:
    """The demo's cluster came up on another port than at the first seed: move its checks."""
    base = urlsplit(sim_url())
    for pk, url in Check.objects.filter(project=project, url__contains="/_services/").values_list(
        "pk", "url"
    ):
        old = urlsplit(url)
        if old.hostname == base.hostname and old.netloc != base.netloc:
            Check.objects.filter(pk=pk).update(url=old._replace(netloc=base.netloc).geturl())


def seed_demo(project: Project) -> None:
    _follow_the_cluster(project)
    now = timezone.now()
    services = {s.name: s for s in project.services.all()}
    assertions = clean_assertions(HEALTHY)
    for env in project.environments.all():
        EnvironmentMonitoring.objects.get_or_create(
            environment=env, defaults={"allow_list": "127.0.0.1"}
        )
        for name in DEMO_CHECKED_SERVICES:
            if name not in services:
                continue
            Check.objects.get_or_create(
                environment=env,
                name=f"{name} health",
                parent=None,
                defaults={
                    "project": project,
                    "service": services[name],
                    "url": sim_health_url(project, env, name),
                    "assertions": assertions,
                    "timeout_seconds": 5.0,
                    "interval_seconds": 60,
                    "next_run_at": now,
                },
            )
        for metric, target, alert in (
            (PerformanceTarget.Metric.RESPONSE_TIME_AVG, 200, 500),
            (PerformanceTarget.Metric.ERROR_RATE, 0.1, 1),
        ):
            PerformanceTarget.objects.get_or_create(
                environment=env,
                metric=metric,
                defaults={"target": target, "alert_threshold": alert},
            )
    staging = project.environments.filter(name="staging").first()
    if staging is None:
        return
    sim = urlsplit(sim_url())
    # A TCP probe of the simulated cluster's API port: is anything listening at all?
    port_url = f"tcp://{sim.hostname}:{sim.port or 80}"
    port_check, created = Check.objects.get_or_create(
        environment=staging,
        name="cluster API port",
        parent=None,
        defaults={
            "project": project,
            "probe": Check.Probe.TCP,
            "url": port_url,
            "assertions": clean_assertions(["latency < 500"]),
            "timeout_seconds": 5.0,
            "interval_seconds": 60,
            "next_run_at": now,
        },
    )
    if not created and port_check.url != port_url:
        # The cluster moved to another port since the first seed (SIM_PORT): follow it.
        port_check.url = port_url
        port_check.save(update_fields=["url"])
    # A cron job's heartbeat: the demo's beat runs "nightly cleanup" at 03:00 UTC (the result
    # retention, monitoring.tasks.demo_nightly_cleanup) and it pings this check when done.
    cleanup, created = Check.objects.get_or_create(
        environment=staging,
        name=NIGHTLY_CLEANUP,
        parent=None,
        defaults={
            "project": project,
            "probe": Check.Probe.HEARTBEAT,
            "ping_key": uuid.uuid4(),
            "heartbeat_cron": "0 3 * * *",
            "heartbeat_timezone": "UTC",
            "heartbeat_grace_seconds": 3600,
            "assertions": [],
        },
    )
    if created:
        # As if last night's run had pinged: the check starts passing, due after tonight's run.
        last_night = heartbeats.next_expected(cleanup, now - timedelta(days=1))
        if last_night > now:
            last_night -= timedelta(days=1)
        heartbeats.record_pings(
            [heartbeats.Ping(cleanup.ping_key, "success", b"demo seed", last_night)]
        )
    suite, created = Check.objects.get_or_create(
        environment=staging,
        name="Storefront smoke",
        parent=None,
        defaults={"project": project, "kind": Check.Kind.SUITE},
    )
    if not created:
        return
    steps = [
        ("storefront is healthy", "storefront-web", HEALTHY),
        ("sign-in is up", "auth-service", ["status == 200", '$.status == "healthy"']),
        ("orders answer", "order-service", ["status in [200, 503]", "$.status exists"]),
    ]
    for position, (name, service, step_assertions) in enumerate(steps, start=1):
        if service not in services:
            continue
        Check.objects.create(
            project=project,
            environment=staging,
            service=services[service],
            parent=suite,
            position=position,
            name=name,
            url=sim_health_url(project, staging, service),
            assertions=clean_assertions(step_assertions),
            timeout_seconds=5.0,
        )


def nightly_cleanup() -> dict:
    """The demo's nightly job: prune old results, then ping the demo's heartbeat check(s)
    named NIGHTLY_CLEANUP, as a cron job would with curl."""
    from .services import prune

    summary = prune()
    keys = Check.objects.filter(
        probe=Check.Probe.HEARTBEAT, name=NIGHTLY_CLEANUP, ping_key__isnull=False
    ).values_list("ping_key", flat=True)
    body = json.dumps(summary, default=str).encode()
    now = timezone.now()
    heartbeats.record_pings([heartbeats.Ping(key, "success", body, now) for key in keys])
    return summary


def seed_bench(projects: list[Project]) -> None:
    """One on-demand health check per environment and service of each benchmark project."""
    environments = list(Environment.objects.filter(project__in=projects))
    services = list(Service.objects.filter(project__in=projects))
    by_project: dict[int, list[Service]] = {}
    for service in services:
        by_project.setdefault(service.project_id, []).append(service)
    EnvironmentMonitoring.objects.bulk_create(
        [EnvironmentMonitoring(environment=env, allow_list="127.0.0.1") for env in environments],
        ignore_conflicts=True,
    )
    assertions = clean_assertions(["status == 200"])
    Check.objects.bulk_create(
        [
            Check(
                project_id=env.project_id,
                environment=env,
                service=service,
                name=f"{service.name} health",
                url=f"{sim_url()}/_services/{env.name}/{service.name}/health",
                assertions=assertions,
            )
            for env in environments
            for service in by_project.get(env.project_id, [])
        ],
        ignore_conflicts=True,
    )
