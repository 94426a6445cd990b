"""Incidents from what the system sees, per environment policy: a check turning critical and a
deployment whose verification failed; one open incident per cause; a suggestion is one click."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitoring.incidents import auto
from monitoring.incidents.models import Incident, IncidentSuggestion
from monitoring.lib.testing import TargetServer

from .incident_helpers import finished_deployment
from .support import Switchable, allow, make_check, run

pytestmark = pytest.mark.django_db


@pytest.fixture
def target() -> Iterator[TargetServer]:
    switch = Switchable(200)
    with TargetServer({"/switch": switch}) as server:
        server.switch = switch
        yield server


def _policy(personas, environment, mode: str, severity: str = "P2") -> None:  # noqa: ANN001
    auto.set_policy(
        personas.admin,
        personas.membership(personas.admin),
        environment,
        mode=mode,
        severity=severity,
    )


def _flip(check, target, status: int, capture) -> None:  # noqa: ANN001
    target.switch.status = status
    with capture(execute=True):
        run(check)


def test_open_policy_one_incident_per_flapping_check(
    personas, target, django_capture_on_commit_callbacks
) -> None:  # noqa: ANN001
    allow(personas.staging)
    _policy(personas, personas.staging, "open", "P1")
    check = make_check(personas, target.url("/switch"), name="api health")
    _flip(check, target, 200, django_capture_on_commit_callbacks)
    _flip(check, target, 503, django_capture_on_commit_callbacks)
    [incident] = Incident.objects.all()
    assert incident.severity == "P1" and incident.cause == f"check:{check.pk}"
    assert incident.title == "Check “api health” failing in staging"
    opened = incident.entries.get(kind="opened")
    assert opened.subject_url == f"/p/shop/health/checks/{check.pk}/"
    # It flaps: recovers and fails again three times; still one incident, with entries.
    for _ in range(3):
        _flip(check, target, 200, django_capture_on_commit_callbacks)
        _flip(check, target, 503, django_capture_on_commit_callbacks)
    assert Incident.objects.count() == 1
    signals = list(incident.entries.filter(kind="signal").values_list("text", flat=True))
    assert signals.count("Check “api health” in staging recovered") == 3
    assert sum("started failing" in s for s in signals) == 3


def test_suggest_policy_and_one_click(
    client, personas, target, django_capture_on_commit_callbacks
) -> None:  # noqa: ANN001
    allow(personas.staging)
    _policy(personas, personas.staging, "suggest")
    check = make_check(personas, target.url("/switch"), name="api health")
    _flip(check, target, 200, django_capture_on_commit_callbacks)
    _flip(check, target, 503, django_capture_on_commit_callbacks)
    _flip(check, target, 200, django_capture_on_commit_callbacks)
    _flip(check, target, 503, django_capture_on_commit_callbacks)
    assert not Incident.objects.exists()
    [suggestion] = IncidentSuggestion.objects.all()
    client.force_login(personas.member)
    assert (
        "Check “api health” failing in staging" in client.get("/p/shop/incidents/").content.decode()
    )
    response = client.post(f"/p/shop/incidents/suggestions/{suggestion.pk}/open/")
    incident = Incident.objects.get()
    assert response["Location"] == f"/p/shop/incidents/{incident.number}/"
    assert incident.cause == f"check:{check.pk}" and incident.created_by == personas.member


def test_off_policy_does_nothing(personas, target, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    allow(personas.staging)
    _policy(personas, personas.staging, "off")
    check = make_check(personas, target.url("/switch"), name="api health")
    _flip(check, target, 200, django_capture_on_commit_callbacks)
    _flip(check, target, 503, django_capture_on_commit_callbacks)
    assert not Incident.objects.exists() and not IncidentSuggestion.objects.exists()


def test_failed_verification_opens_an_incident(
    personas, django_capture_on_commit_callbacks
) -> None:  # noqa: ANN001
    from deployments.services.jobs import _set_status

    _policy(personas, personas.production, "open", "P1")
    deployment = finished_deployment(
        personas, personas.production, "1.6.0", status="running", verify_failed=True
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert _set_status(deployment, "failed", reason="verification failed: api")
    incident = Incident.objects.get()
    assert (
        incident.title == f"Deployment #{deployment.pk} of 1.6.0 to production failed verification"
    )
    assert incident.cause == f"deployment:{deployment.pk}"
    assert list(incident.environments.values_list("name", flat=True)) == ["production"]


def test_bad_policy_input(personas) -> None:  # noqa: ANN001
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as err:
        _policy(personas, personas.staging, "sometimes")
    assert "mode" in err.value.message_dict
