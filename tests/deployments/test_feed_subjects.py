"""Every line of the overview's "Recent activity" and of a release's timeline names its
subject and links to it: "Deployment #12 of 1.5.0 to production failed verification", never
"system deployment: progress"."""

from __future__ import annotations

import pytest

from deployments.services.jobs import _set_status
from releasecenter import events
from tests.monitoring.incident_helpers import finished_deployment, open_incident

pytestmark = pytest.mark.django_db


def _failed_deployment(personas):  # noqa: ANN001, ANN202
    deployment = finished_deployment(
        personas, personas.production, "1.6.0", status="running", verify_failed=True
    )
    # What the runner writes while it works, then the verdict.
    events.publish(
        deployment.topic,
        "deployment.progress",
        project=personas.project.pk,
        obj=deployment,
        data={"changes": [{"type": "step", "service": "api", "status": "running"}]},
    )
    assert _set_status(deployment, "failed", reason="api: HTTP 500 from /health")
    return deployment


def test_recent_activity_names_subjects(client, personas) -> None:  # noqa: ANN001
    deployment = _failed_deployment(personas)
    incident = open_incident(personas)
    client.force_login(personas.member)
    html = client.get("/p/shop/").content.decode()
    line = f"Deployment #{deployment.pk} of 1.6.0 to production failed verification"
    assert (
        f'<a href="/p/shop/deployments/{deployment.pk}/">{line}: api: HTTP 500 from /health</a>'
        in html
    )
    assert "deployment: progress" not in html and "status changed" not in html
    assert f'<a href="/p/shop/incidents/{incident.number}/">INC-1 opened by mia-member' in html
    assert html.count(line) == 1  # the project-topic copy is not listed twice


def test_release_timeline_names_subjects(client, personas) -> None:  # noqa: ANN001
    deployment = _failed_deployment(personas)
    client.force_login(personas.member)
    html = client.get(f"/p/shop/releases/{deployment.release_id}/").content.decode()
    assert f"Deployment #{deployment.pk} of 1.6.0 to production failed verification" in html
    assert f'href="/p/shop/deployments/{deployment.pk}/"' in html
    assert "deployment: progress" not in html


def test_an_incident_timeline_shows_break_glass_and_sign_offs_near_it(personas) -> None:  # noqa: ANN001
    from deployments import services as release_services
    from monitoring.incidents import timeline

    lead, lead_m = personas.lead, personas.membership(personas.lead)
    release_services.set_signoff_requirements(
        personas.admin,
        personas.membership(personas.admin),
        personas.production,
        [("Technical Lead", 1), ("Backend Engineer", 1)],
    )
    release = release_services.create_release(
        personas.member, personas.membership(personas.member), version="2.0.0", commit_sha="a" * 40
    )
    release_services.sign_off(
        lead, lead_m, release, environment="production", role="Technical Lead", decision="approve"
    )
    release_services.check_deploy_allowed(
        lead, lead_m, release, personas.production, override_reason="Hotfix for checkout outage"
    )
    incident = open_incident(personas)
    texts = [item.text for item in timeline.merged(incident)[0]]
    assert (
        "Break-glass: liam-lead overrode the no-go for release 2.0.0 in production: "
        "Hotfix for checkout outage" in texts
    )
    assert "liam-lead approved release 2.0.0 for production as Technical Lead" in texts
