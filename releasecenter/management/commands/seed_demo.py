"""Demo data: the project "Acme Shop" with staging and production, eight services in three tiers,
and three users: an admin, a lead and an engineer. Idempotent: a second run changes nothing.

Other apps add to the demo through ``releasecenter.demo.register(step)``; each step must be
idempotent too.
"""

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from releasecenter import demo

DEMO_USERS = {
    # username: (password, role, sign-off capacities). The admin makes the project.
    "admin": ("admin-demo-pass-2026", "admin", []),
    "lead": (
        "lead-demo-pass-2026",
        "lead",
        ["Technical Lead", "Security Review", "DevOps Engineer"],
    ),
    "engineer": ("engineer-demo-pass-2026", "engineer", ["Backend Engineer"]),
}


class Command(BaseCommand):
    help = "Create the Acme Shop demo project and its users (idempotent)."

    def add_arguments(self, parser):  # noqa: ANN001, ANN201
        parser.add_argument(
            "--quiet-logins", action="store_true", help="Do not print the demo logins."
        )

    def handle(self, *args, **options):  # noqa: ANN002, ANN003, ANN201
        with transaction.atomic():
            project, created = demo.seed_core(DEMO_USERS)
            for step in demo.steps():
                step(project)
        self.stdout.write(
            f"Demo project '{project.name}' ({project.slug}) "
            + ("created." if created else "already present; nothing changed.")
        )
        if not options["quiet_logins"]:
            if not settings.DEBUG:
                self.stderr.write("Warning: demo users with known passwords on a non-DEBUG site.")
            for username, (password, role, _caps) in DEMO_USERS.items():
                self.stdout.write(f"  login: {username} / {password}  ({role})")
