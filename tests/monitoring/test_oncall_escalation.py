"""Escalation: level 1 at once, the next level after a missed acknowledge SLA, nothing after an
acknowledgement, never the same level twice (also under two concurrent ticks), each page a
timeline entry; the one-tap acknowledge link; the escalation-policy API."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.db import connection

from monitoring.incidents import services as incidents
from monitoring.incidents.models import Incident, TimelineEntry
from monitoring.oncall import channels, escalation, schedules
from monitoring.oncall.models import ChannelMessage, EscalationLevel, EscalationPage
from releasecenter.models import AuditEvent

T0 = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)  # a Tuesday, 03:00 in Berlin


def setup_policy(personas, levels=None):  # noqa: ANN001, ANN201
    lead_m = personas.membership(personas.lead)
    for user in (personas.lead, personas.member, personas.admin):
        user.email = f"{user.username}@shop.example"
        user.save(update_fields=["email"])
    schedules.create_schedule(
        personas.lead,
        lead_m,
        name="Primary",
        time_zone="Europe/Berlin",
        rotation="weekly",
        handoff="09:00",
        members=["mia-member", "liam-lead"],
        anchor=date(2026, 11, 9),
    )
    channels.create_channel(
        personas.lead, lead_m, name="team mail", kind="email", emails=["team@shop.example"]
    )
    escalation.set_policy(
        personas.lead,
        lead_m,
        levels
        or {
            "P1": [
                {"schedule": "Primary", "wait_minutes": 5},
                {"members": ["liam-lead"], "wait_minutes": 5},
                {"members": ["alice-admin"], "wait_minutes": 5},
            ]
        },
    )


def open_p1(personas, title="Checkout down"):  # noqa: ANN001, ANN201
    return incidents.open_incident(
        personas.member,
        personas.membership(personas.member),
        title=title,
        severity="P1",
        environments=["production"],
    )


def pages(incident: Incident) -> list[tuple[int, list[str]]]:
    return list(
        EscalationPage.objects.filter(incident=incident)
        .order_by("level")
        .values_list("level", "recipients")
    )


def test_level_one_then_level_two_after_the_missed_sla_and_nothing_after_acknowledge(personas):
    setup_policy(personas)
    with time_machine.travel(T0, tick=False):
        incident = open_p1(personas)
        assert escalation.tick() == 1
        assert escalation.tick() == 0  # a second beat, or a redelivered task
    # Mia is on call this week; she is paged, by the team channel and by her own e-mail.
    assert pages(incident) == [(1, ["mia-member"])]
    recipients = sorted(
        m.to_email or m.channel.name for m in ChannelMessage.objects.filter(incident_id=incident.pk)
    )
    assert recipients == ["mia-member@shop.example", "team mail"]
    # Level 1 waits 5 minutes, but P1's acknowledge SLA is 15: nothing at 10 minutes.
    with time_machine.travel(T0 + timedelta(minutes=10), tick=False):
        assert escalation.tick() == 0
    with time_machine.travel(T0 + timedelta(minutes=15, seconds=1), tick=False):
        incidents.evaluate_sla()
        assert escalation.tick() == 1
        assert escalation.tick() == 0
    assert pages(incident) == [(1, ["mia-member"]), (2, ["liam-lead"])]
    with time_machine.travel(T0 + timedelta(minutes=17), tick=False):
        incidents.acknowledge_incident(personas.lead, personas.membership(personas.lead), incident)
    with time_machine.travel(T0 + timedelta(hours=2), tick=False):
        assert escalation.tick() == 0
    assert [level for level, _ in pages(incident)] == [1, 2]
    texts = list(
        TimelineEntry.objects.filter(incident=incident, data__isnull=False)
        .order_by("occurred_at", "id")
        .values_list("text", flat=True)
    )
    assert any(
        "paged level 1 of the P1 escalation: mia-member (on call for Primary)" in t for t in texts
    )
    assert any("escalated to level 2 of the P1 escalation: liam-lead" in t for t in texts)
    # The messages name the incident and carry the acknowledge link, never a secret.
    for channel_message in ChannelMessage.objects.filter(incident_id=incident.pk):
        assert incident.reference in channel_message.subject
        assert "/oncall/ack/" in channel_message.text
    for message in ChannelMessage.objects.all():
        assert channels.deliver(message.pk)
    assert len(mail.outbox) == 4


def test_a_severity_without_levels_pages_nobody(personas):
    setup_policy(personas)
    with time_machine.travel(T0, tick=False):
        incident = incidents.open_incident(
            personas.member,
            personas.membership(personas.member),
            title="typo",
            severity="P4",
            environments=["production"],
        )
        assert escalation.tick() == 0
    assert pages(incident) == []


def race(now: datetime, workers: int = 3) -> list[int]:
    """Run the tick in several threads (own connections) released at the same moment."""
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(workers)

    def tick() -> None:
        try:
            barrier.wait()
            results.append(escalation.tick(now=now))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_ticks_never_page_a_level_twice(personas):
    setup_policy(personas)
    with time_machine.travel(T0, tick=False):
        opened = [open_p1(personas, f"incident {i}") for i in range(15)]
    assert sum(race(T0 + timedelta(seconds=1))) == len(opened)
    assert sum(race(T0 + timedelta(minutes=16))) == len(opened)
    assert sum(race(T0 + timedelta(minutes=17))) == 0
    for incident in opened:
        assert [level for level, _ in pages(incident)] == [1, 2]
    assert EscalationPage.objects.count() == 2 * len(opened)
    signals = TimelineEntry.objects.filter(kind="signal", incident__in=opened).count()
    assert signals == 2 * len(opened)
    # Two messages (team channel + the person's e-mail) per page, never more.
    assert ChannelMessage.objects.filter(incident_id__in=[i.pk for i in opened]).count() == 4 * len(
        opened
    )


# --- The one-tap link -----------------------------------------------------------------------------


def paged_link(personas) -> tuple[Incident, str]:  # noqa: ANN001
    setup_policy(personas)
    incident = open_p1(personas)
    escalation.tick()
    page = EscalationPage.objects.get(incident=incident)
    link = escalation.ack_link(page.pk, incident.pk)
    return incident, link.split("127.0.0.1:8000", 1)[1]


def test_the_link_asks_for_a_login_then_acknowledges_once(client, personas):
    incident, path = paged_link(personas)
    anonymous = client.get(path)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/?next=")
    client.force_login(personas.member)
    shown = client.get(path)
    assert shown.status_code == 200 and b"data-ack" in shown.content
    incident.refresh_from_db()
    assert incident.acknowledged_at is None  # looking at the link does not acknowledge
    done = client.post(path)
    assert done.status_code == 200 and b"acknowledged" in done.content
    incident.refresh_from_db()
    assert incident.acknowledged_by == personas.member
    client.force_login(personas.lead)
    again = client.post(path)
    # Already acknowledged: the page says by whom, and nothing is acknowledged twice.
    assert again.status_code == 200 and b"mia-member" in again.content
    assert EscalationPage.objects.get(incident=incident).link_used_at is not None
    assert (
        AuditEvent.objects.filter(
            verb="incident.acknowledged", topic=personas.project.topic, object_id=str(incident.pk)
        ).count()
        == 1
    )


def test_a_used_link_is_refused(client, personas):
    incident, path = paged_link(personas)
    client.force_login(personas.member)
    assert client.post(path).status_code == 200
    # Flare-up: pretend someone cleared the acknowledgement; the spent link still cannot.
    Incident.objects.filter(pk=incident.pk).update(acknowledged_at=None, acknowledged_by=None)
    refused = client.post(path)
    assert refused.status_code == 403 and b"already used" in refused.content


def test_tampered_expired_resolved_and_foreign_links_are_refused(client, personas):
    incident, path = paged_link(personas)
    client.force_login(personas.member)
    tampered = path[:-3] + ("A" if path[-3] != "A" else "B") + path[-2:]
    assert client.get(tampered).status_code == 404
    assert client.get("/oncall/ack/not-a-token/").status_code == 404
    with time_machine.travel(datetime.now(UTC) + timedelta(hours=25)):
        # The 8-hour session has expired too: the link sends to the login first.
        assert client.post(path).status_code == 302
        client.force_login(personas.member)
        expired = client.post(path)
    assert expired.status_code == 403 and b"expired" in expired.content
    client.force_login(personas.outsider)
    assert client.get(path).status_code == 404
    client.force_login(personas.member)
    incidents.change_status(
        personas.lead, personas.membership(personas.lead), incident, "resolved", "fixed"
    )
    resolved = client.post(path)
    assert resolved.status_code == 403 and b"resolved" in resolved.content
    incident.refresh_from_db()
    assert incident.acknowledged_at is None


# --- API ------------------------------------------------------------------------------------------


def test_escalation_policy_api(api_client_for, personas):
    setup_policy(personas, {"P1": [{"members": ["liam-lead"], "wait_minutes": 3}]})
    client = api_client_for(personas.lead)
    got = client.get("/api/v1/projects/shop/escalation-policy/").json()
    assert got["policy"]["P1"] == [{"schedule": None, "members": ["liam-lead"], "wait_minutes": 3}]
    body = {
        "policy": {
            "P0": [
                {"schedule": "Primary", "wait_minutes": 0},
                {"members": ["alice-admin", "liam-lead"], "wait_minutes": 10},
            ]
        }
    }
    put = client.put("/api/v1/projects/shop/escalation-policy/", body, format="json")
    assert put.status_code == 200, put.json()
    assert put.json()["policy"]["P1"] == [] and len(put.json()["policy"]["P0"]) == 2
    assert (
        api_client_for(personas.outsider)
        .get("/api/v1/projects/shop/escalation-policy/")
        .status_code
        == 404
    )
    assert (
        api_client_for(personas.member)
        .put("/api/v1/projects/shop/escalation-policy/", body, format="json")
        .status_code
        == 403
    )


@pytest.mark.parametrize(
    "policy",
    [
        {"P9": [{"members": ["liam-lead"], "wait_minutes": 1}]},
        {"P1": [{"schedule": "Nope", "wait_minutes": 1}]},
        {"P1": [{"members": ["oscar-outsider"], "wait_minutes": 1}]},
        {"P1": [{"wait_minutes": 1}]},
        {"P1": [{"members": ["liam-lead"], "wait_minutes": -1}]},
        {"P1": "everyone"},
    ],
)
def test_bad_escalation_policies_are_a_400_and_change_nothing(api_client_for, personas, policy):
    setup_policy(personas, {"P1": [{"members": ["liam-lead"], "wait_minutes": 3}]})
    before = list(EscalationLevel.objects.values_list("severity", "position", "wait_minutes"))
    response = api_client_for(personas.lead).put(
        "/api/v1/projects/shop/escalation-policy/", {"policy": policy}, format="json"
    )
    assert response.status_code == 400, response.json()
    assert any(key.startswith("policy") for key in response.json())
    assert list(EscalationLevel.objects.values_list("severity", "position", "wait_minutes")) == (
        before
    )


def test_severity_policy_api_in_seconds(api_client_for, personas):
    client = api_client_for(personas.admin)
    got = client.get("/api/v1/projects/shop/severity-policy/").json()["policy"]
    assert got["P1"] == {"acknowledge_seconds": 900, "update_seconds": 1800}
    put = client.put(
        "/api/v1/projects/shop/severity-policy/",
        {"policy": {"P1": {"acknowledge_seconds": 120}}},
        format="json",
    )
    assert put.status_code == 200, put.json()
    assert put.json()["policy"]["P1"] == {"acknowledge_seconds": 120, "update_seconds": 1800}
    for bad in ({"P9": {}}, {"P1": {"acknowledge_seconds": -60}}, {"P1": {"update_seconds": "x"}}):
        response = client.put(
            "/api/v1/projects/shop/severity-policy/", {"policy": bad}, format="json"
        )
        assert response.status_code == 400 and any(k.startswith("policy") for k in response.json())
    assert client.get("/api/v1/projects/shop/severity-policy/").json()["policy"]["P1"] == {
        "acknowledge_seconds": 120,
        "update_seconds": 1800,
    }
    assert (
        api_client_for(personas.lead)
        .put("/api/v1/projects/shop/severity-policy/", {"policy": {"P1": {}}}, format="json")
        .status_code
        == 403
    )


def test_on_call_endpoints_are_in_the_openapi_schema(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").content.decode()
    for path in (
        "/api/v1/projects/{slug}/schedules/",
        "/api/v1/projects/{slug}/oncall/",
        "/api/v1/projects/{slug}/escalation-policy/",
        "/api/v1/projects/{slug}/notification-channels/",
        "/api/v1/projects/{slug}/severity-policy/",
    ):
        assert path in schema, path


def test_a_new_incident_pages_level_one_through_a_real_worker(celery_worker, personas):
    """No beat needed for the first page: opening the incident queues a tick for it."""
    import time

    from django.db import transaction

    setup_policy(personas)
    with transaction.atomic():
        incident = open_p1(personas, "Search is down")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not EscalationPage.objects.filter(incident=incident):
        time.sleep(0.2)
    assert pages(incident) == [(1, [pages_expected_on_call(personas)])]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not ChannelMessage.objects.filter(incident_id=incident.pk).exclude(status="sent"):
            break
        time.sleep(0.2)
    assert set(
        ChannelMessage.objects.filter(incident_id=incident.pk).values_list("status", flat=True)
    ) == {"sent"}


def pages_expected_on_call(personas) -> str:  # noqa: ANN001
    [now] = schedules.project_on_call(personas.project)
    return now.user.username
