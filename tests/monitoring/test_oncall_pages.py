"""The on-call pages' forms: overrides on the calendar, the status page's settings, publishing an
incident and one's own update."""

from __future__ import annotations

from datetime import date

from django.test import Client

from monitoring.incidents import services as incidents
from monitoring.oncall import schedules
from monitoring.oncall.models import ScheduleOverride, StatusPage


def make_schedule(personas):  # noqa: ANN001, ANN201
    return schedules.create_schedule(
        personas.lead,
        personas.membership(personas.lead),
        name="Primary",
        time_zone="Europe/Berlin",
        rotation="weekly",
        handoff="09:00",
        members=["liam-lead", "mia-member"],
        anchor=date(2026, 3, 16),
    )


def test_override_form_in_the_schedules_time_zone_and_overlaps_refused(client, personas):
    schedule = make_schedule(personas)
    client.force_login(personas.member)
    url = f"/p/shop/oncall/schedules/{schedule.pk}/overrides/"
    form = {"user": "liam-lead", "starts_at": "2026-03-24T18:00", "ends_at": "2026-03-25T09:00"}
    assert client.post(url, form).status_code == 302
    override = ScheduleOverride.objects.get()
    assert override.starts_at.isoformat() == "2026-03-24T17:00:00+00:00"  # 18:00 in Berlin
    refused = client.post(url, {**form, "starts_at": "2026-03-25T08:00"}, follow=True)
    assert b"Overlaps" in refused.content
    assert ScheduleOverride.objects.count() == 1
    client.force_login(personas.viewer)
    assert client.post(url, form).status_code == 403
    client.force_login(personas.outsider)
    assert client.post(url, form).status_code == 404


def test_status_page_settings_publish_and_public_updates(client, personas):
    client.force_login(personas.member)
    assert (
        client.post(
            "/p/shop/oncall/status-page/", {"action": "settings", "enabled": "on"}
        ).status_code
        == 403
    )
    assert not StatusPage.objects.filter(enabled=True).exists()
    client.force_login(personas.admin)
    saved = client.post(
        "/p/shop/oncall/status-page/",
        {
            "action": "settings",
            "enabled": "on",
            "title": "Shop status",
            "environment": "production",
            "groups": "Everything: api, web",
        },
    )
    assert saved.status_code == 302
    m = personas.membership(personas.lead)
    incident = incidents.open_incident(
        personas.lead, m, title="db-7 disk full", severity="P2", environments=["production"]
    )
    entry = incidents.add_timeline_entry(
        personas.lead, m, incident, kind="update", text="Orders are delayed; we are on it."
    )
    client.force_login(personas.lead)
    page = client.get("/p/shop/oncall/status-page/").content.decode()
    assert incident.reference in page and f'data-entry="{entry.pk}"' in page
    client.post(
        "/p/shop/oncall/status-page/",
        {"action": "publish", "incident": incident.pk, "title": "Orders are delayed"},
    )
    client.post("/p/shop/oncall/status-page/", {"action": "update", "entry": entry.pk})
    public = Client().get("/status/shop/").content.decode()
    assert "Shop status" in public and "Everything" in public
    assert "Orders are delayed; we are on it." in public and "db-7" not in public


def test_the_phone_on_call_view_says_who_is_on_call(client, personas):
    make_schedule(personas)
    client.force_login(personas.member)
    page = client.get("/p/shop/incidents/oncall/").content.decode()
    assert 'data-schedule="Primary"' in page and "on-call-person" in page
