"""Demo data for releases: policies for Acme Shop's environments and release 1.4.0 in review,
whose production environment requires four role sign-offs. Idempotent."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from checklists.models import ChecklistTemplate
from releasecenter.models import Membership

from . import services
from .models import EnvironmentPolicy, Release, SignoffRequirement

DEMO_VERSION = "1.4.0"
PRODUCTION_ROLES = ["Backend Engineer", "DevOps Engineer", "Security Review", "Technical Lead"]
TEMPLATES_BY_ENVIRONMENT = {
    "staging": ["Staging smoke checklist"],
    "production": ["Production deployment runbook"],
}


def _templates(project, names: list[str]) -> list:  # noqa: ANN001
    return list(ChecklistTemplate.objects.filter(project=project, name__in=names))


def seed(project) -> None:  # noqa: ANN001
    environments = {e.name: e for e in project.environments.all()}
    for name, env in environments.items():
        # Bootstrap data written directly, like the core's seed: there is no admin actor yet.
        policy, created = EnvironmentPolicy.objects.get_or_create(
            environment=env,
            defaults={
                "require_previous_verified": env.kind == "production",
                "block_on_incidents": EnvironmentPolicy.IncidentRule.P1,
                "auto_rollback": True,
            },
        )
        templates = _templates(project, TEMPLATES_BY_ENVIRONMENT.get(name, []))
        if created and templates:
            policy.checklist_templates.set(templates)
        if env.kind == "production":
            for role in PRODUCTION_ROLES:
                SignoffRequirement.objects.get_or_create(environment=env, role=role)
    if Release.objects.filter(project=project, version=DEMO_VERSION).exists():
        return
    lead = (
        Membership.objects.filter(project=project, role=Membership.Role.LEAD)
        .select_related("user", "project")
        .first()
    )
    if lead is None:
        return
    release = services.create_release(
        lead.user,
        lead,
        version=DEMO_VERSION,
        commit_sha="4f2a9c81d07e",
        notes="Checkout redesign, faster catalog search, payment provider SDK upgrade.",
        planned_start=(timezone.now() + timedelta(days=2)).replace(
            hour=9, minute=0, second=0, microsecond=0
        ),
    )
    services.submit_for_review(lead.user, lead, release)
