"""The demo seed, shared by `seed_demo` and the tests. Each step is idempotent."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth import get_user_model

from . import events
from .models import Environment, Membership, Project, Service

DEMO_SLUG = "acme-shop"
DEMO_SERVICES = [
    # (name, tier, health path)
    ("auth-service", 1, "/health"),
    ("catalog-service", 1, "/health"),
    ("inventory-service", 1, "/health"),
    ("cart-service", 2, "/health"),
    ("order-service", 2, "/health"),
    ("payment-service", 2, "/health"),
    ("storefront-web", 3, "/health"),
    ("admin-web", 3, "/health"),
]

_steps: list[Callable[[Project], None]] = []


def register(step: Callable[[Project], None]) -> None:
    """Other apps add their demo data (releases, runs, checks) as a step run after the core."""
    if step not in _steps:
        _steps.append(step)


def steps() -> list[Callable[[Project], None]]:
    return list(_steps)


def seed_core(users: dict[str, tuple[str, str, list[str]]]) -> tuple[Project, bool]:
    project, created = Project.objects.get_or_create(slug=DEMO_SLUG, defaults={"name": "Acme Shop"})
    Environment.objects.get_or_create(
        project=project,
        name="staging",
        defaults={"kind": Environment.Kind.STAGING, "order": 10, "protected": False},
    )
    Environment.objects.get_or_create(
        project=project,
        name="production",
        defaults={"kind": Environment.Kind.PRODUCTION, "order": 20, "protected": True},
    )
    for name, tier, health_path in DEMO_SERVICES:
        Service.objects.get_or_create(
            project=project, name=name, defaults={"tier": tier, "health_path": health_path}
        )
    User = get_user_model()  # noqa: N806
    for username, (password, role, capacities) in users.items():
        user, user_created = User.objects.get_or_create(
            username=username, defaults={"email": f"{username}@acme.example"}
        )
        if user_created:
            user.set_password(password)
            user.save(update_fields=["password"])
        Membership.objects.get_or_create(
            user=user,
            project=project,
            defaults={"role": role, "signoff_capacities": capacities},
        )
    if created:
        events.publish(
            project.topic,
            "project.created",
            project=project,
            obj=project,
            after={"slug": project.slug, "name": project.name, "source": "seed_demo"},
        )
    return project, created
