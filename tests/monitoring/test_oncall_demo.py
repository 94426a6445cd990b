"""The demo's on-call: a weekly rotation of lead and engineer, a two-level escalation policy, a
console e-mail channel and Acme Shop's status page, seeded once."""

import io

from django.core.management import call_command
from django.test import Client

from monitoring.oncall import escalation
from monitoring.oncall.models import NotificationChannel, Schedule, StatusPage
from releasecenter.models import AuditEvent, Project


def test_demo_has_on_call_and_a_status_page_and_seeds_it_once(db):
    call_command("seed_demo", stdout=io.StringIO())
    project = Project.objects.get(slug="acme-shop")
    schedule = Schedule.objects.get(project=project)
    assert schedule.rotation == "weekly"
    assert [m.user.username for m in schedule.members.order_by("position")] == ["lead", "engineer"]
    policy = escalation.policy(project)
    assert [level["schedule"] for level in policy["P1"]] == ["Primary", None]
    assert policy["P1"][1]["members"] == ["lead"]
    assert NotificationChannel.objects.get(project=project).kind == "email"
    assert StatusPage.objects.get(project=project).enabled
    page = Client().get("/status/acme-shop/")
    assert page.status_code == 200 and b"Cart and checkout" in page.content
    assert b"payment-service" not in page.content
    events = AuditEvent.objects.count()
    call_command("seed_demo", stdout=io.StringIO())
    assert AuditEvent.objects.count() == events
