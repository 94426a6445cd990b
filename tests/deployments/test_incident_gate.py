"""The release gate on incidents: an environment policy's "block while a P_n or worse incident
is open" gives a decision reason with code "incident", the incident's title and a link; resolving
the incident removes it; a lead can still go ahead with a reason (break-glass)."""

from __future__ import annotations

import pytest
from django.db import transaction

from deployments import services
from deployments.models import Override
from monitoring.incidents import services as incidents

pytestmark = pytest.mark.django_db


def _release(personas):  # noqa: ANN001, ANN202
    m = personas.membership(personas.member)
    release = services.create_release(personas.member, m, version="2.0.0", commit_sha="abcdef12")
    services.submit_for_review(personas.member, m, release)
    return release


def _block_on(personas, rule: str) -> None:  # noqa: ANN001
    services.update_policy(
        personas.admin,
        personas.membership(personas.admin),
        personas.staging,
        block_on_incidents=rule,
    )


def _open(personas, severity: str, environment: str = "staging"):  # noqa: ANN001, ANN202
    return incidents.open_incident(
        personas.member,
        personas.membership(personas.member),
        title="Search is slow",
        severity=severity,
        environments=[environment],
    )


def test_incident_reason_appears_and_disappears(api_client_for, personas) -> None:  # noqa: ANN001
    _block_on(personas, "P2")
    release = _release(personas)
    client = api_client_for(personas.member)
    url = f"/api/v1/releases/{release.pk}/decision?environment=staging"
    assert client.get(url).json()["decision"] == "go"

    # A P3 is not "P2 or worse"; an incident elsewhere does not count either.
    _open(personas, "P3")
    _open(personas, "P1", environment="production")
    assert client.get(url).json()["decision"] == "go"

    incident = _open(personas, "P2")
    body = client.get(url).json()
    assert body["decision"] == "no-go"
    [reason] = body["reasons"]
    assert reason["code"] == "incident"
    assert reason["message"] == "Open P2 incident INC-3: Search is slow"
    assert reason["link"] == f"/p/shop/incidents/{incident.number}/"

    incidents.change_status(
        personas.member, personas.membership(personas.member), incident, "resolved", "fixed"
    )
    assert client.get(url).json() == {
        "decision": "go",
        "reasons": [],
        "environment": "staging",
        "requester": None,
    }


def test_p0_blocks_under_a_p1_rule(personas) -> None:  # noqa: ANN001
    from deployments.decision import decide

    _block_on(personas, "P1")
    release = _release(personas)
    _open(personas, "P0")
    decision = decide(release, personas.staging)
    assert [r.code for r in decision.reasons] == ["incident"]


def test_release_page_shows_the_reason_with_a_link(client, personas) -> None:  # noqa: ANN001
    _block_on(personas, "P2")
    release = _release(personas)
    incident = _open(personas, "P1")
    client.force_login(personas.member)
    html = client.get(f"/p/shop/releases/{release.pk}/").content.decode()
    assert "Open P1 incident INC-1: Search is slow" in html
    assert f'href="/p/shop/incidents/{incident.number}/"' in html


def test_break_glass_still_works(personas) -> None:  # noqa: ANN001
    _block_on(personas, "P2")
    release = _release(personas)
    _open(personas, "P1")
    with pytest.raises(services.DeployRefused), transaction.atomic():
        services.check_deploy_allowed(
            personas.member, personas.membership(personas.member), release, personas.staging
        )
    with transaction.atomic():
        override = services.check_deploy_allowed(
            personas.lead,
            personas.membership(personas.lead),
            release,
            personas.staging,
            override_reason="Hotfix for the incident itself",
        )
    assert isinstance(override, Override)
    assert [r["code"] for r in override.reasons] == ["incident"]


@pytest.mark.parametrize(
    ("rule", "severity", "blocks"),
    [("P3", "P3", True), ("P3", "P4", False), ("P4", "P4", True), ("P0", "P1", False)],
)
def test_any_severity_can_be_the_rule(personas, rule, severity, blocks) -> None:  # noqa: ANN001
    from deployments.decision import decide

    _block_on(personas, rule)
    release = _release(personas)
    _open(personas, severity)
    decision = decide(release, personas.staging)
    assert ("incident" in [r.code for r in decision.reasons]) is blocks
