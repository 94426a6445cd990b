"""Fill a database with N times a base set, for the benchmarks under bench/.

The base set is one project with two environments, eight services in three tiers and five users
(one of each role, plus an outsider). Later apps extend it through
``releasecenter.benchdata.register(step)``: each step gets the projects created in this run.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from releasecenter import benchdata
from releasecenter.models import Environment, Membership, Project, Service

ROLES = ["viewer", "engineer", "lead", "admin"]


class Command(BaseCommand):
    help = "Create N times a base set of projects, environments, services and users."

    def add_arguments(self, parser):  # noqa: ANN001, ANN201
        parser.add_argument("--scale", type=int, required=True)
        parser.add_argument("--prefix", default="bench")

    def handle(self, *args, scale: int, prefix: str, **options):  # noqa: ANN002, ANN003, ANN201
        if scale < 1 or scale > 100_000:
            raise CommandError("--scale is a whole number from 1 to 100000.")
        start = Project.objects.filter(slug__startswith=f"{prefix}-").count()
        password = make_password("bench-password-not-secret")
        User = get_user_model()  # noqa: N806
        with transaction.atomic():
            projects = Project.objects.bulk_create(
                [
                    Project(slug=f"{prefix}-{i}", name=f"Bench project {i}")
                    for i in range(start, start + scale)
                ]
            )
            Environment.objects.bulk_create(
                [
                    Environment(project=p, name=n, kind=k, order=o, protected=k == "production")
                    for p in projects
                    for n, k, o in (("staging", "staging", 10), ("production", "production", 20))
                ]
            )
            Service.objects.bulk_create(
                [
                    Service(project=p, name=f"svc-{s}", tier=1 + s * 3 // 8)
                    for p in projects
                    for s in range(8)
                ]
            )
            users = User.objects.bulk_create(
                [
                    User(username=f"{p.slug}-{r}", password=password)
                    for p in projects
                    for r in [*ROLES, "outsider"]
                ]
            )
            by_name = {u.username: u for u in users}
            Membership.objects.bulk_create(
                [
                    Membership(user=by_name[f"{p.slug}-{r}"], project=p, role=r)
                    for p in projects
                    for r in ROLES
                ]
            )
            for step in benchdata.steps():
                step(projects)
        self.stdout.write(
            f"Created {scale} project(s) with 2 environments, 8 services and 5 users each "
            f"(+{len(benchdata.steps())} extension step(s))."
        )
