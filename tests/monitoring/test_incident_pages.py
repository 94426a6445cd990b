"""Incident pages: list and open, the incident page (clocks, suspects, merged timeline, filter,
export), acknowledge and status from the page, postmortem, on-call view, the severity policy;
outsiders get 404, viewers read but cannot change, Markdown is rendered safely."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from monitoring.incidents import services
from monitoring.incidents.models import Incident, SeverityPolicy

from .incident_helpers import finished_deployment, open_incident

pytestmark = pytest.mark.django_db


def test_open_from_the_list_and_see_it(client, personas) -> None:  # noqa: ANN001
    client.force_login(personas.member)
    page = client.get("/p/shop/incidents/")
    assert page.status_code == 200 and "Open an incident" in page.content.decode()
    response = client.post(
        "/p/shop/incidents/new/",
        {"title": "Payments failing", "severity": "P1", "environments": ["production"]},
    )
    assert response.status_code == 302 and response["Location"] == "/p/shop/incidents/1/"
    html = client.get("/p/shop/incidents/").content.decode()
    assert "INC-1 Payments failing" in html


def test_bad_form_input_changes_nothing(client, personas) -> None:  # noqa: ANN001
    client.force_login(personas.member)
    response = client.post(
        "/p/shop/incidents/new/",
        {"title": "", "severity": "P1", "environments": ["production"]},
        follow=True,
    )
    assert "Title: This may not be empty." in response.content.decode()
    assert not Incident.objects.exists()


def test_incident_page_has_clocks_suspects_and_merged_timeline(client, personas) -> None:  # noqa: ANN001
    deployment = finished_deployment(personas, personas.production, "1.5.0", minutes_ago=40)
    incident = open_incident(personas)
    client.force_login(personas.member)
    html = client.get(f"/p/shop/incidents/{incident.number}/").content.decode()
    assert 'data-clock="acknowledge"' in html and 'data-clock="update"' in html
    title = f"Deployment #{deployment.pk} of 1.5.0 to production"
    assert title in html and "api 1.4.9 → 1.5.0" in html
    assert 'data-action="rollback"' in html
    # The system's entries from an hour before the start, naming their subject with a link.
    assert f"{title} requested by mia-member" in html
    assert f"{title}: api (tier 1) rolled out" in html
    assert f'href="/p/shop/deployments/{deployment.pk}/"' in html
    # Filter by kind: only people's notes.
    services.add_timeline_entry(
        personas.member, personas.membership(personas.member), incident, kind="note", text="hello"
    )
    only = client.get(f"/p/shop/incidents/{incident.number}/?kind=note").content.decode()
    assert "hello" in only and f"{title} requested" not in only


def test_acknowledge_status_and_entry_from_the_page(client, personas) -> None:  # noqa: ANN001
    incident = open_incident(personas)
    client.force_login(personas.lead)
    base = f"/p/shop/incidents/{incident.number}"
    client.post(f"{base}/acknowledge/")
    client.post(f"{base}/entries/", {"kind": "action", "text": "Restarted the api"})
    response = client.post(
        f"{base}/status/", {"status": "resolved", "message": "Fixed", "version": "3"}
    )
    assert response["Location"] == f"{base}/postmortem/"
    incident.refresh_from_db()
    assert incident.acknowledged_at and incident.status == "resolved"
    page = client.get(f"{base}/postmortem/").content.decode()
    assert "The record at resolution" in page and "Restarted the api" in page


def test_markdown_is_rendered_safely(client, personas) -> None:  # noqa: ANN001
    incident = open_incident(
        personas, summary="<script>alert(1)</script> [x](javascript:alert(1)) **bold**"
    )
    client.force_login(personas.member)
    html = client.get(f"/p/shop/incidents/{incident.number}/").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert 'href="javascript:' not in html.lower()
    assert "<strong>bold</strong>" in html


def test_outsider_404_viewer_reads_only(client, personas) -> None:  # noqa: ANN001
    incident = open_incident(personas)
    base = f"/p/shop/incidents/{incident.number}"
    client.force_login(personas.outsider)
    for url in (base + "/", base + "/timeline.md", base + "/postmortem/", "/p/shop/incidents/"):
        assert client.get(url).status_code == 404
    assert client.post(base + "/acknowledge/").status_code == 404
    client.force_login(personas.viewer)
    html = client.get(base + "/").content.decode()
    assert "Checkout down" in html and 'data-action="acknowledge"' not in html
    assert client.post(base + "/acknowledge/").status_code == 403
    assert client.post(base + "/entries/", {"kind": "note", "text": "x"}).status_code == 403
    incident.refresh_from_db()
    assert incident.acknowledged_at is None


def test_timeline_markdown_export(client, personas) -> None:  # noqa: ANN001
    finished_deployment(personas, personas.production, "1.5.0", minutes_ago=30)
    incident = open_incident(personas)
    client.force_login(personas.member)
    response = client.get(f"/p/shop/incidents/{incident.number}/timeline.md")
    text = response.content.decode()
    assert response["Content-Type"].startswith("text/markdown")
    assert text.startswith("## Timeline of INC-1: Checkout down")
    assert (
        "of 1.5.0 to production requested by mia-member" in text
        and "](/p/shop/deployments/" in text
    )


def test_page_query_count_does_not_grow_with_the_timeline(client, personas) -> None:  # noqa: ANN001
    incident = open_incident(personas)
    m = personas.membership(personas.member)
    client.force_login(personas.member)
    url = f"/p/shop/incidents/{incident.number}/"

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == 200
        return len(ctx.captured_queries)

    for i in range(3):
        services.add_timeline_entry(personas.member, m, incident, kind="note", text=f"n{i}")
    finished_deployment(personas, personas.production, "1.5.0", minutes_ago=50)
    few = count()
    for i in range(30):
        services.add_timeline_entry(personas.member, m, incident, kind="note", text=f"m{i}")
    for version in ("1.5.1", "1.5.2", "1.5.3"):
        finished_deployment(personas, personas.production, version, minutes_ago=20)
    assert count() == few


def test_oncall_view(client, personas) -> None:  # noqa: ANN001
    finished_deployment(personas, personas.production, "1.5.0", minutes_ago=40)
    incident = open_incident(personas)
    client.force_login(personas.member)
    html = client.get("/p/shop/incidents/oncall/").content.decode()
    assert "data-theme" not in html  # follows prefers-color-scheme
    assert f"{incident.reference} {incident.title}" in html
    assert 'data-action="acknowledge"' in html and 'data-action="rollback"' in html
    assert "of 1.5.0 to production" in html  # last 24 hours
    client.post(
        f"/p/shop/incidents/{incident.number}/entries/",
        {"kind": "update", "text": "Rolling back", "next": "oncall"},
    )
    assert incident.entries.filter(kind="update").exists()


def test_severity_policy_admin_only(client, personas) -> None:  # noqa: ANN001
    client.force_login(personas.member)
    assert "15 minutes" in client.get("/p/shop/incidents/policy/").content.decode()
    assert (
        client.post(
            "/p/shop/incidents/policy/",
            {"severity": "P1", "acknowledge": "5", "update": "20"},
        ).status_code
        == 403
    )
    client.force_login(personas.admin)
    client.post(
        "/p/shop/incidents/policy/",
        {"severity": "P1", "acknowledge": "5", "update": "20"},
    )
    # A bare number is minutes; the policy keeps seconds.
    row = SeverityPolicy.objects.get(severity="P1")
    assert (row.acknowledge_seconds, row.update_seconds) == (300, 1200)
    incident = open_incident(personas)
    assert incident.acknowledge_due_at - incident.started_at == timedelta(minutes=5)
    assert incident.started_at <= timezone.now()


def test_severity_policy_form_takes_seconds_minutes_and_hours(client, personas) -> None:  # noqa: ANN001
    client.force_login(personas.admin)
    client.post(
        "/p/shop/incidents/policy/", {"severity": "P1", "acknowledge": "90s", "update": "2h"}
    )
    row = SeverityPolicy.objects.get(severity="P1")
    assert (row.acknowledge_seconds, row.update_seconds) == (90, 7200)
    page = client.get("/p/shop/incidents/policy/").content.decode()
    assert "90 seconds" in page and 'value="90s"' in page and 'value="2h"' in page
    # Bad input names the field and changes nothing.
    page = client.post(
        "/p/shop/incidents/policy/",
        {"severity": "P1", "acknowledge": "soon", "update": "30m"},
        follow=True,
    ).content.decode()
    assert "Acknowledge:" in page
    row.refresh_from_db()
    assert (row.acknowledge_seconds, row.update_seconds) == (90, 7200)


def test_overview_lists_open_incidents_and_overdue_actions(client, personas) -> None:  # noqa: ANN001
    from monitoring.incidents import postmortems

    incident = open_incident(personas)
    m = personas.membership(personas.member)
    done = open_incident(personas, title="Old one", severity="P3")
    done = services.change_status(personas.member, m, done, "resolved", "fixed")
    late = postmortems.add_action_item(
        personas.member,
        m,
        done.postmortem,
        text="Alert on queue depth",
        owner="mia-member",
        due_date=(timezone.localdate() - timedelta(days=2)).isoformat(),
    )
    postmortems.add_action_item(
        personas.member,
        m,
        done.postmortem,
        text="Later",
        due_date=timezone.localdate() + timedelta(days=3),
    )
    client.force_login(personas.viewer)
    html = client.get("/p/shop/").content.decode()
    assert f"P1 {incident.reference} Checkout down" in html
    section = html[html.index("data-overdue-actions") :]
    section = section[: section.index("</article>")]
    assert "1 overdue postmortem action item" in section and late.text in section
    assert "Later" not in section
    postmortems.complete_action_item(personas.member, m, late)
    assert "overdue postmortem" not in client.get("/p/shop/").content.decode()
