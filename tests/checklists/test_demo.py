"""The demo seeds our own runbooks into Acme Shop, once."""

from __future__ import annotations

import io

from django.core.management import call_command

from checklists import selectors
from checklists.demo import DEMO_TEMPLATE_NAMES
from checklists.models import ChecklistTemplate, Item, RecurringSchedule, Run


def seed() -> None:
    call_command("seed_demo", "--quiet-logins", stdout=io.StringIO())


def test_demo_templates_are_seeded_once(db):
    seed()
    templates = ChecklistTemplate.objects.filter(project__slug="acme-shop")
    assert sorted(templates.values_list("name", flat=True)) == sorted(DEMO_TEMPLATE_NAMES)
    production = templates.get(name="Production deployment runbook")
    assert production.kind == "deployment-day"
    assert templates.get(name="Staging smoke checklist").kind == "pre-deployment"
    version = production.current_version
    assert version.signoff_roles == [
        "Backend Engineer",
        "DevOps Engineer",
        "Security Review",
        "Technical Lead",
    ]
    severities = set(Item.objects.filter(version=version).values_list("severity", flat=True))
    assert {"no-go", "conditional", "warning"} <= severities
    phases = set(Item.objects.filter(version=version).values_list("due_offset_minutes", flat=True))
    assert {-1440, -120, 0, 15, 60} <= phases
    assert Item.objects.filter(version=version, parent__isnull=False).count() == 3
    run = Run.objects.get(template=production, title__startswith="Rehearsal")
    assert run.environment.name == "staging" and run.planned_start is not None
    gates = selectors.gate_items([run.pk])
    assert {g.severity for g in gates} == {"no-go", "conditional", "warning"}
    assert RecurringSchedule.objects.filter(template__name="Staging smoke checklist").count() == 1

    counts = (
        ChecklistTemplate.objects.count(),
        Item.objects.count(),
        Run.objects.count(),
        RecurringSchedule.objects.count(),
    )
    seed()
    assert (
        ChecklistTemplate.objects.count(),
        Item.objects.count(),
        Run.objects.count(),
        RecurringSchedule.objects.count(),
    ) == counts


def test_demo_run_page_renders(client, db):
    seed()
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.get(username="engineer"))
    run = Run.objects.get(title__startswith="Rehearsal of the production runbook")
    page = client.get(f"/p/acme-shop/checklists/runs/{run.pk}/")
    assert page.status_code == 200
    assert "Readiness gates" in page.content.decode()
    # A newcomer opens the demo's run before anything in it is due: nothing overdue yet.
    assert page.context["overdue_count"] == 0
    assert "data-overdue-count hidden" in page.content.decode()
