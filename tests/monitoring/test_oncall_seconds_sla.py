"""The severity policy in seconds: a P1 acknowledge SLA of 3 s set through the API drives the
escalation (level 1 at once, level 2 once the 3 s pass unacknowledged, nothing after an
acknowledgement), and the escalation survives a worker killed with -9 between two levels."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from celery import current_app
from django.db import transaction

from monitoring.incidents import services as incidents
from monitoring.incidents.models import Incident, SeverityPolicy, TimelineEntry
from monitoring.oncall import escalation
from monitoring.oncall.models import ChannelMessage, EscalationPage
from releasecenter.schedule import BEAT_SCHEDULE

from .test_oncall_escalation import open_p1, pages, setup_policy

T0 = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)
# Level 1 waits nothing of its own, so the acknowledge SLA alone decides when level 2 is due.
LEVELS = {
    "P1": [
        {"schedule": "Primary", "wait_minutes": 0},
        {"members": ["liam-lead"], "wait_minutes": 5},
    ]
}


def set_p1_acknowledge_seconds(api_client_for, personas, seconds: int) -> None:  # noqa: ANN001
    response = api_client_for(personas.admin).put(
        "/api/v1/projects/shop/severity-policy/",
        {"policy": {"P1": {"acknowledge_seconds": seconds}}},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["policy"]["P1"]["acknowledge_seconds"] == seconds
    assert SeverityPolicy.objects.get(severity="P1").acknowledge_seconds == seconds


def test_a_three_second_acknowledge_sla_escalates_after_three_seconds(api_client_for, personas):
    setup_policy(personas, LEVELS)
    set_p1_acknowledge_seconds(api_client_for, personas, 3)
    with time_machine.travel(T0, tick=False):
        incident = open_p1(personas)
        assert incident.acknowledge_due_at == T0 + timedelta(seconds=3)
        assert escalation.tick() == 1
    assert pages(incident) == [(1, ["mia-member"])]
    with time_machine.travel(T0 + timedelta(seconds=2), tick=False):
        assert escalation.tick() == 0  # the SLA has not passed yet
    with time_machine.travel(T0 + timedelta(seconds=3, milliseconds=100), tick=False):
        assert incidents.evaluate_sla() >= 1  # the breach is recorded, too
        assert escalation.tick() == 1
        assert escalation.tick() == 0
    assert pages(incident) == [(1, ["mia-member"]), (2, ["liam-lead"])]
    with time_machine.travel(T0 + timedelta(seconds=5), tick=False):
        incidents.acknowledge_incident(personas.lead, personas.membership(personas.lead), incident)
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        assert escalation.tick() == 0
    assert [level for level, _ in pages(incident)] == [1, 2]


def test_sub_minute_and_bad_seconds_through_the_api(api_client_for, personas):
    client = api_client_for(personas.admin)
    url = "/api/v1/projects/shop/severity-policy/"
    put = client.put(url, {"policy": {"P2": {"acknowledge_seconds": 90}}}, format="json")
    assert put.status_code == 200
    assert put.json()["policy"]["P2"] == {"acknowledge_seconds": 90, "update_seconds": 3600}
    for bad, field in (
        ({"P2": {"update_seconds": 0}}, "policy.P2.update_seconds"),
        ({"P2": {"acknowledge_seconds": 10**9}}, "policy.P2.acknowledge_seconds"),
        ({"P2": {"acknowledge_seconds": 1.5}}, "policy.P2.acknowledge_seconds"),
    ):
        response = client.put(url, {"policy": bad}, format="json")
        assert response.status_code == 400, bad
        assert field in response.content.decode()
    assert client.get(url).json()["policy"]["P2"] == {
        "acknowledge_seconds": 90,
        "update_seconds": 3600,
    }


def wait_for(condition, what: str, timeout: float = 45):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def beat_sends_escalation_tick() -> None:
    """What celery beat does for the on-call entry: send the task by name, routed by its name."""
    current_app.send_task(BEAT_SCHEDULE["oncall-escalation-tick"]["task"])


@pytest.mark.celery_worker
def test_escalation_survives_a_worker_killed_between_levels(api_client_for, personas, start_worker):
    setup_policy(personas, LEVELS)
    set_p1_acknowledge_seconds(api_client_for, personas, 3)
    worker = start_worker()
    with transaction.atomic():
        incident = open_p1(personas, "Search is down")  # queues a tick for it on commit
    wait_for(lambda: EscalationPage.objects.filter(incident=incident).exists(), "level 1")
    [first] = EscalationPage.objects.filter(incident=incident)
    assert first.level == 1

    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    start_worker()
    incident.refresh_from_db()
    # Sleep past the SLA, then the beat's next tick reaches the new worker.
    while datetime.now(UTC) <= incident.acknowledge_due_at:
        time.sleep(0.2)
    beat_sends_escalation_tick()
    wait_for(lambda: EscalationPage.objects.filter(incident=incident, level=2).exists(), "level 2")
    entries = TimelineEntry.objects.filter(incident=incident).count()
    # Further beats page nothing more: level 1 is never paged again (level 3 does not exist).
    for _ in range(2):
        beat_sends_escalation_tick()
    time.sleep(3)
    assert EscalationPage.objects.get(incident=incident, level=1).paged_at == first.paged_at
    assert [level for level, _ in pages(incident)] == [1, 2]
    level_one_entries = [
        t
        for t in TimelineEntry.objects.filter(incident=incident).values_list("text", flat=True)
        if "paged level 1" in t
    ]
    assert len(level_one_entries) == 1
    assert TimelineEntry.objects.filter(incident=incident).count() == entries
    assert Incident.objects.get(pk=incident.pk).acknowledged_at is None
    assert ChannelMessage.objects.filter(incident_id=incident.pk).exists()
