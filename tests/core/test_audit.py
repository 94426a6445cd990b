"""Every state change leaves an append-only audit event."""

import pytest
from django.core.exceptions import ValidationError

from releasecenter import services
from releasecenter.models import AuditEvent


def test_services_write_audit_events(personas):
    verbs = list(AuditEvent.objects.filter(project=personas.project).values_list("verb", flat=True))
    assert verbs.count("project.created") == 1
    assert verbs.count("member.added") == 3
    assert verbs.count("environment.created") == 2
    assert verbs.count("service.created") == 2
    event = AuditEvent.objects.get(
        project=personas.project, verb="member.added", after__username="liam-lead"
    )
    assert event.actor == personas.admin
    assert event.after["signoff_capacities"] == ["Technical Lead", "Security Review"]


def test_update_records_before_and_after(personas):
    admin_m = personas.membership(personas.admin)
    services.update_environment(personas.admin, admin_m, personas.staging, protected=True)
    event = AuditEvent.objects.filter(verb="environment.updated").latest("id")
    assert event.before["protected"] is False
    assert event.after["protected"] is True


def test_audit_rows_cannot_be_changed_or_deleted(personas):
    event = AuditEvent.objects.filter(project=personas.project).first()
    event.verb = "tampered"
    with pytest.raises(TypeError):
        event.save()
    with pytest.raises(TypeError):
        event.delete()
    with pytest.raises(TypeError):
        AuditEvent.objects.filter(pk=event.pk).update(verb="tampered")
    with pytest.raises(TypeError):
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get(pk=event.pk).verb != "tampered"


def test_failed_change_writes_no_event(personas):
    admin_m = personas.membership(personas.admin)
    before = AuditEvent.objects.count()
    with pytest.raises(ValidationError):
        services.create_service(personas.admin, admin_m, name="", tier=1)
    with pytest.raises(services.Conflict):
        services.create_service(personas.admin, admin_m, name="api", tier=1)
    assert AuditEvent.objects.count() == before


def test_last_admin_cannot_be_removed(personas):
    admin_m = personas.membership(personas.admin)
    with pytest.raises(ValidationError):
        services.remove_member(personas.admin, admin_m, admin_m)
    assert personas.project.memberships.filter(role="admin").count() == 1


def test_request_id_is_recorded(client, personas):
    client.force_login(personas.admin)
    response = client.post(
        f"/p/{personas.project.slug}/settings/",
        {
            "action": "add-service",
            "svc-name": "worker",
            "svc-tier": "3",
            "svc-health_path": "/healthz",
        },
        HTTP_X_REQUEST_ID="req-abc-123",
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(verb="service.created", after__name="worker")
    assert event.request_id == "req-abc-123"
    assert event.actor == personas.admin
