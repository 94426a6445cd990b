"""On-call in the demo: a weekly rotation of the lead and the engineer, a two-level escalation
policy, a console e-mail channel (Django's console backend prints pages in the worker's log)
and Acme Shop's public status page switched on. Idempotent: a second run changes nothing."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from releasecenter.models import Membership, Project

from . import channels, escalation, schedules, status_page
from .models import NotificationChannel, Schedule, StatusPage

DEMO_GROUPS = [
    ("Sign-in", ["auth-service"]),
    ("Catalogue and search", ["catalog-service", "inventory-service"]),
    ("Cart and checkout", ["cart-service", "order-service", "payment-service"]),
    ("Storefront", ["storefront-web"]),
]


def seed_demo(project: Project) -> None:
    users = {u.username: u for u in get_user_model().objects.filter(memberships__project=project)}
    if "lead" not in users or "engineer" not in users:
        return
    lead = users["lead"]
    lead_m = Membership.objects.get(user=lead, project=project)
    if not Schedule.objects.filter(project=project, name="Primary").exists():
        schedules.create_schedule(
            lead,
            lead_m,
            name="Primary",
            time_zone="Europe/Berlin",
            rotation="weekly",
            handoff="09:00",
            members=["lead", "engineer"],
        )
    if not NotificationChannel.objects.filter(project=project, name="On-call e-mail").exists():
        channels.create_channel(
            lead,
            lead_m,
            name="On-call e-mail",
            kind="email",
            emails=["oncall@acme.example"],
        )
    if not escalation.policy(project)["P1"]:
        two_levels = [
            {"schedule": "Primary", "wait_minutes": 5},
            {"members": ["lead"], "wait_minutes": 10},
        ]
        escalation.set_policy(lead, lead_m, {"P0": two_levels, "P1": two_levels, "P2": two_levels})
    if not StatusPage.objects.filter(project=project, enabled=True).exists():
        admin_m = (
            Membership.objects.filter(project=project, role=Membership.Role.ADMIN)
            .select_related("user")
            .first()
        )
        if admin_m is None:
            return
        names = set(project.services.values_list("name", flat=True))
        status_page.configure(
            admin_m.user,
            admin_m,
            enabled=True,
            title="Acme Shop status",
            environment="production",
            groups=[
                {"name": name, "services": [s for s in members if s in names]}
                for name, members in DEMO_GROUPS
            ],
        )
