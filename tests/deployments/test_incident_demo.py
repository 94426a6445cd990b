"""The demo's incident: a resolved P2 in staging with a full timeline, its suspect deployment
and a reviewed postmortem with one open action item; staging opens incidents on its own."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from monitoring.incidents import selectors, timeline
from monitoring.incidents.models import AutoIncidentPolicy, Incident

pytestmark = pytest.mark.django_db


def test_demo_incident(client) -> None:  # noqa: ANN001
    call_command("seed_demo", stdout=io.StringIO())
    call_command("seed_demo", stdout=io.StringIO())  # idempotent
    [incident] = Incident.objects.filter(project__slug="acme-shop")
    assert (incident.severity, incident.status) == ("P2", "resolved")
    assert list(incident.environments.values_list("name", flat=True)) == ["staging"]
    items, _ = timeline.merged(incident, limit=None)
    kinds = {i.kind for i in items}
    assert {"opened", "acknowledged", "hypothesis", "decision", "action", "update"} <= kinds
    assert {"deployment", "rollback", "status"} <= kinds
    [suspect] = selectors.suspects(incident)
    assert suspect.title.endswith("of 1.3.1 to staging") and suspect.rolled_back
    postmortem = incident.postmortem
    assert postmortem.reviewed_at and postmortem.root_cause
    assert [a.done_at for a in postmortem.actions.all()] == [None]
    policy = AutoIncidentPolicy.objects.get(environment=incident.environments.get())
    assert policy.mode == "open"
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.get(username="lead"))
    html = client.get(f"/p/acme-shop/incidents/{incident.number}/postmortem/").content.decode()
    assert "Add a search latency check to staging" in html
