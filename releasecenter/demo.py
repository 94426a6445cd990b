"""The demo seed, shared by `seed_demo` and the tests. Each step is idempotent."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth import get_user_model

from . import services
from .models import Environment, Membership, Project

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
    """The demo project, made through the same services as the pages (so its history is in the
    audit log), by the first admin of `users`. A second run changes nothing."""
    User = get_user_model()  # noqa: N806
    people = {}
    for username, (password, _role, _capacities) in users.items():
        user, user_created = User.objects.get_or_create(
            username=username, defaults={"email": f"{username}@acme.example"}
        )
        if user_created:
            user.set_password(password)
            user.save(update_fields=["password"])
        people[username] = user
    project = Project.objects.filter(slug=DEMO_SLUG).first()
    if project is not None:
        return project, False
    founder = next(name for name, (_p, role, _c) in users.items() if role == Membership.Role.ADMIN)
    actor = people[founder]
    project = services.create_project(actor, slug=DEMO_SLUG, name="Acme Shop")
    membership = Membership.objects.get(user=actor, project=project)
    services.create_environment(
        actor, membership, name="staging", kind=Environment.Kind.STAGING, order=10
    )
    services.create_environment(
        actor,
        membership,
        name="production",
        kind=Environment.Kind.PRODUCTION,
        order=20,
        protected=True,
    )
    for name, tier, health_path in DEMO_SERVICES:
        services.create_service(actor, membership, name=name, tier=tier, health_path=health_path)
    for username, (_password, role, capacities) in users.items():
        if username != founder:
            services.add_member(
                actor, membership, username=username, role=role, signoff_capacities=capacities
            )
    return project, True
