"""Incident verbs: opening, acknowledging, the status table, clocks, versions, bad input."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from monitoring.incidents import services
from monitoring.incidents.models import Incident, TimelineEntry
from releasecenter.models import AuditEvent

pytestmark = pytest.mark.django_db


def _open(personas, **kw):  # noqa: ANN001, ANN003, ANN202
    args = {
        "title": "Checkout down",
        "severity": "P1",
        "environments": ["production"],
        "services": ["api"],
        "summary": "500s on **checkout**",
    }
    args.update(kw)
    return services.open_incident(personas.member, personas.membership(personas.member), **args)


def test_open_sets_clocks_number_entry_and_event(personas) -> None:  # noqa: ANN001
    incident = _open(personas)
    assert incident.reference == "INC-1"
    assert incident.status == "investigating"
    # P1 default: acknowledge within 15 minutes, update every 30.
    assert incident.acknowledge_due_at - incident.started_at == timedelta(minutes=15)
    assert incident.update_due_at - incident.started_at == timedelta(minutes=30)
    assert [e.kind for e in incident.entries.all()] == ["opened"]
    assert AuditEvent.objects.filter(verb="incident.opened", project=personas.project).exists()
    assert list(incident.environments.values_list("name", flat=True)) == ["production"]
    assert _open(personas).number == 2


def test_acknowledge_stops_clock_and_is_idempotent(personas) -> None:  # noqa: ANN001
    incident = _open(personas)
    membership = personas.membership(personas.lead)
    acked = services.acknowledge_incident(personas.lead, membership, incident)
    assert acked.acknowledged_at and acked.acknowledge_due_at is None
    assert acked.commander == personas.lead
    again = services.acknowledge_incident(personas.lead, membership, incident)
    assert again.acknowledged_at == acked.acknowledged_at
    assert incident.entries.filter(kind="acknowledged").count() == 1


def test_status_table_and_reasons(personas) -> None:  # noqa: ANN001
    incident = _open(personas, severity="P3")
    m = personas.membership(personas.member)
    with pytest.raises(ValidationError) as err:
        services.change_status(personas.member, m, incident, "closed", "done")
    assert "allowed: identified, monitoring, resolved" in str(err.value)
    with pytest.raises(ValidationError) as err:
        services.change_status(personas.member, m, incident, "identified", "")
    assert "message" in err.value.message_dict
    incident = services.change_status(personas.member, m, incident, "monitoring", "fix out")
    # Flares up again: an earlier status may be re-entered from monitoring.
    incident = services.change_status(personas.member, m, incident, "investigating", "back")
    incident = services.change_status(personas.member, m, incident, "resolved", "fixed")
    assert incident.resolved_at and incident.update_due_at is None
    incident = services.change_status(personas.member, m, incident, "closed", "reviewed")
    assert incident.closed_at and incident.allowed_moves() == []
    texts = list(incident.entries.filter(kind="status").values_list("text", flat=True))
    assert texts[0] == "INC-1 moved from investigating to monitoring by mia-member: fix out"


def test_p1_closes_only_after_reviewed_postmortem(personas) -> None:  # noqa: ANN001
    incident = _open(personas, severity="P1")
    m = personas.membership(personas.member)
    incident = services.change_status(personas.member, m, incident, "resolved", "fixed")
    with pytest.raises(ValidationError, match="reviewed"):
        services.change_status(personas.member, m, incident, "closed", "done")
    incident.postmortem.reviewed_at = timezone.now()
    incident.postmortem.save()
    assert services.change_status(personas.member, m, incident, "closed", "ok").status == "closed"


def test_stale_version_is_a_conflict(personas) -> None:  # noqa: ANN001
    incident = _open(personas)
    m = personas.membership(personas.member)
    services.update_incident(personas.member, m, incident, version=1, title="Checkout slow")
    with pytest.raises(services.StaleVersion) as err:
        services.update_incident(personas.member, m, incident, version=1, title="Other")
    assert err.value.incident.title == "Checkout slow" and err.value.incident.version == 2
    assert Incident.objects.get(pk=incident.pk).title == "Checkout slow"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": "x" * 100_000}, "title"),
        ({"title": "a\x00b"}, "title"),
        ({"severity": "P9"}, "severity"),
        ({"environments": ["nowhere"]}, "environments"),
        ({"services": ["secret-service"]}, "services"),
        ({"started_at": "2999-01-01T00:00:00Z"}, "started_at"),
        ({"started_at": "2001-01-01T00:00:00Z"}, "started_at"),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(personas, changes, field) -> None:  # noqa: ANN001
    with pytest.raises(ValidationError) as err:
        _open(personas, **changes)
    assert field in err.value.message_dict
    assert not Incident.objects.exists()


def test_viewer_cannot_change(personas) -> None:  # noqa: ANN001
    incident = _open(personas)
    with pytest.raises(PermissionDenied):
        services.acknowledge_incident(
            personas.viewer, personas.membership(personas.viewer), incident
        )


def test_timeline_entries_and_update_clock(personas) -> None:  # noqa: ANN001
    incident = _open(personas, severity="P2")
    m = personas.membership(personas.member)
    due = incident.update_due_at
    entry = services.add_timeline_entry(
        personas.member, m, incident, kind="update", text="We rolled back"
    )
    incident.refresh_from_db()
    assert incident.update_due_at > due
    with pytest.raises(ValidationError) as err:
        services.add_timeline_entry(
            personas.member,
            m,
            incident,
            kind="note",
            text="from the future",
            occurred_at=timezone.now() + timedelta(hours=1),
        )
    assert "occurred_at" in err.value.message_dict
    with pytest.raises(ValidationError):
        services.add_timeline_entry(personas.member, m, incident, kind="status", text="x")
    with pytest.raises(PermissionDenied):
        services.edit_timeline_entry(
            personas.lead, personas.membership(personas.lead), entry, text="mine now"
        )
    services.edit_timeline_entry(personas.member, m, entry, text="We rolled back 1.4.2")
    assert AuditEvent.objects.filter(
        verb="incident.entry_edited", before__text="We rolled back"
    ).exists()


def test_sla_breach_is_stamped_once(personas) -> None:  # noqa: ANN001
    incident = _open(personas, severity="P0")
    later = timezone.now() + timedelta(minutes=20)
    assert services.evaluate_sla(later) == 2  # acknowledge (immediate) and the 15-minute update
    assert services.evaluate_sla(later) == 0
    breaches = incident.entries.filter(kind=TimelineEntry.Kind.BREACH)
    assert breaches.count() == 2
    assert "not acknowledged" in breaches.order_by("occurred_at").first().text


def test_one_open_incident_per_cause(personas) -> None:  # noqa: ANN001
    first = services.open_incident(
        None,
        None,
        project=personas.project,
        title="api failing",
        severity="P2",
        environments=["production"],
        cause="check:1",
    )
    again = services.open_incident(
        None,
        None,
        project=personas.project,
        title="api failing",
        severity="P2",
        environments=["production"],
        cause="check:1",
    )
    assert first.pk == again.pk


def test_never_deleted(personas) -> None:  # noqa: ANN001
    incident = _open(personas)
    with pytest.raises(TypeError):
        incident.delete()
    with pytest.raises(TypeError):
        incident.entries.first().delete()
    assert Incident.objects.filter(pk=incident.pk).exists()
