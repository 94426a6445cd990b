"""The checklists part of the demo: two runbooks of our own, a run and a recurring schedule.

The step is idempotent: templates are found by name, and the run and schedule are only made
along with the production template, so a second seed changes nothing.
"""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path

from django.utils import timezone

from releasecenter.models import Membership, Project

from ..models import ChecklistTemplate

HERE = Path(__file__).resolve().parent
PRODUCTION_RUNBOOK = "Production deployment runbook"
STAGING_SMOKE = "Staging smoke checklist"
DEMO_TEMPLATES = [
    # (name, kind, file)
    (PRODUCTION_RUNBOOK, ChecklistTemplate.Kind.DEPLOYMENT_DAY, "production-deployment.md"),
    (STAGING_SMOKE, ChecklistTemplate.Kind.PRE_DEPLOYMENT, "staging-smoke.md"),
]
DEMO_TEMPLATE_NAMES = [name for name, _kind, _file in DEMO_TEMPLATES]


def seed(project: Project) -> None:
    from .. import services

    lead = (
        Membership.objects.filter(project=project, role=Membership.Role.LEAD)
        .select_related("user")
        .first()
    )
    actor = lead.user if lead else None
    for name, kind, filename in DEMO_TEMPLATES:
        if ChecklistTemplate.objects.filter(project=project, name=name).exists():
            continue
        outcome = services.import_runbook(
            actor,
            project,
            (HERE / filename).read_bytes(),
            name=name,
            kind=kind,
            filename=filename,
        )
        staging = project.environments.filter(name="staging").first()
        if staging is None:
            continue
        if name == PRODUCTION_RUNBOOK:
            # A rehearsal on staging the day after tomorrow at 09:00, so the demo has a run to
            # tick that nothing is overdue on yet: its first phase is due a day before the start.
            start = (timezone.now() + timedelta(days=2)).replace(
                hour=9, minute=0, second=0, microsecond=0
            )
            services.create_run(
                actor,
                outcome.template,
                environment=staging,
                planned_start=start,
                title="Rehearsal of the production runbook on staging",
            )
        else:
            services.create_schedule(
                actor,
                outcome.template,
                environment=staging,
                frequency="daily",
                time_of_day=time(9, 0),
                timezone_name="Europe/Berlin",
                deadline_minutes=4 * 60,
            )
