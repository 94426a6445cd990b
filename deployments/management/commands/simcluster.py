"""Serve the simulated Kubernetes cluster (deployments.sim) in the foreground.

    python manage.py simcluster --port 8001 --seed-project acme-shop

takes every option of ``python -m deployments.sim`` and one more: ``--seed-project SLUG`` seeds,
for each environment of the project whose deploy target points at this cluster, one Deployment
per service in the target's namespace, running what Release Center last recorded there (what
runs where), or ``--seed-version`` where nothing is recorded. So the demo's cluster starts out
agreeing with the dashboard, even after a restart lost its memory.
"""

from __future__ import annotations

import tempfile
from urllib.parse import urlsplit

import yaml
from django.core.management.base import BaseCommand, CommandError

from deployments.sim import cluster as sim


class Command(BaseCommand):
    help = "Serve a simulated Kubernetes API (apps/v1 Deployments) for demos and tests."

    def add_arguments(self, parser):  # noqa: ANN001, ANN201
        sim.add_arguments(parser)
        parser.add_argument(
            "--seed-project",
            action="append",
            default=[],
            metavar="SLUG",
            help="seed the services of this project's environments that point at this port",
        )
        parser.add_argument(
            "--seed-version",
            default="1.3.0",
            help="image tag for services with no recorded version (default 1.3.0)",
        )
        parser.add_argument("--replicas", type=int, default=2, help="replicas per Deployment")

    def handle(self, *args, **options):  # noqa: ANN002, ANN003, ANN201
        seeds = list(options.pop("seed"))
        items = []
        version = options.pop("seed_version")
        for slug in options.pop("seed_project"):
            items += project_seed(slug, options["port"], version, options["replicas"])
        with tempfile.TemporaryDirectory(prefix="simcluster-") as folder:
            if items:
                path = f"{folder}/seed.yaml"
                with open(path, "w") as handle:
                    yaml.safe_dump({"deployments": items}, handle)
                seeds.append(path)
            try:
                return_code = sim.run(seed=seeds, out=self.stdout, **options)
            except ValueError as error:
                raise CommandError(str(error)) from None
        if return_code:
            raise CommandError(f"simcluster exited with {return_code}")


def project_seed(slug: str, port: int, version: str, replicas: int) -> list[dict]:
    from deployments.jobs_demo import IMAGE
    from deployments.models import DeployedVersion, DeployTarget
    from releasecenter.models import Project

    project = Project.objects.filter(slug=slug).first()
    if project is None:
        raise CommandError(f"No project '{slug}' (run seed_demo first?).")
    items = []
    targets = DeployTarget.objects.filter(
        environment__project=project, strategy=DeployTarget.Strategy.KUBERNETES
    ).select_related("environment")
    for target in targets:
        url = urlsplit(target.api_url)
        if url.hostname not in ("127.0.0.1", "localhost") or (url.port or 80) != port:
            continue
        running = {
            row.service_id: row
            for row in DeployedVersion.objects.filter(environment=target.environment)
        }
        for service in project.services.all():
            row = running.get(service.pk)
            image = (row.image if row else "") or IMAGE.format(
                service=service.name, version=row.version if row else version
            )
            items.append(
                {
                    "namespace": target.namespace,
                    "name": target.deployment_name(service.name),
                    "image": image,
                    "replicas": replicas,
                }
            )
    if not items:
        raise CommandError(f"No environment of '{slug}' has a deploy target on port {port}.")
    return items
