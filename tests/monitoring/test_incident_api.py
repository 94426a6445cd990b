"""The incident API: create, list with filters, detail with SLA and suspects, acknowledge,
status moves, timeline, postmortem; 404 for outsiders, 403 for viewers, 400 naming the field,
409 with the current state on a stale version; in the OpenAPI schema."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.incidents.models import Incident

from .incident_helpers import finished_deployment, open_incident

pytestmark = pytest.mark.django_db

BODY = {
    "title": "Checkout down",
    "severity": "P1",
    "environments": ["production"],
    "services": ["api"],
    "summary": "500s",
}


def test_create_list_and_filter(api_client_for, personas) -> None:  # noqa: ANN001
    client = api_client_for(personas.member)
    created = client.post("/api/v1/projects/shop/incidents/", BODY, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert (
        body["status"] == "investigating" and body["id"] and body["url"] == "/p/shop/incidents/1/"
    )
    client.post(
        "/api/v1/projects/shop/incidents/",
        {**BODY, "severity": "P3", "environments": ["staging"]},
        format="json",
    )
    listed = client.get("/api/v1/projects/shop/incidents/?severity=P3").json()
    assert listed["count"] == 1 and listed["results"][0]["environments"] == ["staging"]
    assert (
        client.get("/api/v1/projects/shop/incidents/?environment=production").json()["count"] == 1
    )
    assert client.get("/api/v1/projects/shop/incidents/?status=open").json()["count"] == 2
    assert client.get("/api/v1/projects/shop/incidents/?status=bogus").status_code == 400


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": "x" * 100_000}, "title"),
        ({"title": "a\x00b"}, "title"),
        ({"severity": "P7"}, "severity"),
        ({"environments": ["staging", "moon"]}, "environments"),
        ({"services": ["secret-service"]}, "services"),
        ({"started_at": "2999-01-01T00:00:00Z"}, "started_at"),
        ({"started_at": "2000-01-01T00:00:00Z"}, "started_at"),
    ],
)
def test_bad_input_is_400_naming_the_field(api_client_for, personas, change, field) -> None:  # noqa: ANN001
    client = api_client_for(personas.member)
    response = client.post("/api/v1/projects/shop/incidents/", {**BODY, **change}, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Incident.objects.exists()


def test_other_projects_environment_is_400(api_client_for, personas) -> None:  # noqa: ANN001
    # "elsewhere" has a "staging" too; ours is taken, never theirs.
    client = api_client_for(personas.member)
    body = client.post(
        "/api/v1/projects/shop/incidents/", {**BODY, "environments": ["staging"]}, format="json"
    ).json()
    incident = Incident.objects.get(pk=body["id"])
    assert list(incident.environments.values_list("project_id", flat=True)) == [personas.project.pk]


def test_detail_sla_suspects_and_rollback(api_client_for, personas) -> None:  # noqa: ANN001
    deployment = finished_deployment(personas, personas.production, "1.5.0", minutes_ago=40)
    incident = open_incident(personas)
    client = api_client_for(personas.member)
    body = client.get(f"/api/v1/incidents/{incident.pk}/").json()
    assert body["severity"] == "P1" and body["acknowledged_at"] is None
    assert body["sla"]["acknowledge_by"] and body["sla"]["breached"] is False
    [suspect] = body["suspect_deployments"]
    assert suspect["title"] == f"Deployment #{deployment.pk} of 1.5.0 to production"
    assert {"service": "api", "before": "1.4.9", "after": "1.5.0"} in suspect["changes"]
    assert suspect["can_roll_back"] is True
    rolled = client.post(
        f"/api/v1/incidents/{incident.pk}/rollback/", {"suspect": suspect["id"]}, format="json"
    )
    assert rolled.status_code == 202, rolled.content
    deployment.refresh_from_db()
    assert deployment.status == "rolling_back"
    timeline = client.get(f"/api/v1/incidents/{incident.pk}/timeline/").json()
    assert any("Rollback of Deployment" in e["text"] for e in timeline)


def test_acknowledge_status_and_timeline(api_client_for, personas) -> None:  # noqa: ANN001
    incident = open_incident(personas)
    client = api_client_for(personas.lead)
    acked = client.post(f"/api/v1/incidents/{incident.pk}/acknowledge/", {}, format="json")
    assert acked.status_code == 200 and acked.json()["acknowledged_at"]
    bad = client.post(
        f"/api/v1/incidents/{incident.pk}/status/",
        {"status": "closed", "message": "x"},
        format="json",
    )
    assert bad.status_code == 400
    assert "identified, monitoring, resolved" in bad.json()["status"][0]
    unknown = client.post(
        f"/api/v1/incidents/{incident.pk}/status/",
        {"status": "sleeping", "message": "x"},
        format="json",
    )
    assert unknown.status_code == 400 and "status" in unknown.json()
    moved = client.post(
        f"/api/v1/incidents/{incident.pk}/status/",
        {"status": "identified", "message": "bad config"},
        format="json",
    )
    assert moved.json()["status"] == "identified"
    posted = client.post(
        f"/api/v1/incidents/{incident.pk}/timeline/",
        {"kind": "hypothesis", "text": "the cache"},
        format="json",
    )
    assert posted.status_code == 201 and posted.json()["source"] == "person"
    future = client.post(
        f"/api/v1/incidents/{incident.pk}/timeline/",
        {
            "kind": "note",
            "text": "x",
            "occurred_at": (timezone.now() + timedelta(hours=2)).isoformat(),
        },
        format="json",
    )
    assert future.status_code == 400 and "occurred_at" in future.json()
    entries = client.get(f"/api/v1/incidents/{incident.pk}/timeline/").json()
    assert [e["kind"] for e in entries] == ["opened", "acknowledged", "status", "hypothesis"]
    assert all({"occurred_at", "kind", "source", "text", "subject"} <= set(e) for e in entries)
    only = client.get(f"/api/v1/incidents/{incident.pk}/timeline/?kind=hypothesis").json()
    assert [e["text"] for e in only] == ["the cache"]


def test_stale_version_is_409_with_current_state(api_client_for, personas) -> None:  # noqa: ANN001
    incident = open_incident(personas)
    client = api_client_for(personas.member)
    first = client.patch(
        f"/api/v1/incidents/{incident.pk}/", {"version": 1, "severity": "P0"}, format="json"
    )
    assert first.status_code == 200 and first.json()["version"] == 2
    stale = client.patch(
        f"/api/v1/incidents/{incident.pk}/", {"version": 1, "title": "Mine"}, format="json"
    )
    assert stale.status_code == 409
    assert stale.json()["current"]["severity"] == "P0"
    assert stale.json()["current"]["title"] == "Checkout down"


def test_outsider_404_viewer_403_and_no_delete(api_client_for, personas) -> None:  # noqa: ANN001
    incident = open_incident(personas)
    outsider = api_client_for(personas.outsider)
    for url in (
        f"/api/v1/incidents/{incident.pk}/",
        f"/api/v1/incidents/{incident.pk}/timeline/",
        f"/api/v1/incidents/{incident.pk}/postmortem/",
    ):
        assert outsider.get(url).status_code == 404
    assert outsider.post(f"/api/v1/incidents/{incident.pk}/acknowledge/").status_code == 404
    assert outsider.get("/api/v1/projects/shop/incidents/").status_code == 404
    viewer = api_client_for(personas.viewer)
    assert viewer.get(f"/api/v1/incidents/{incident.pk}/").status_code == 200
    assert viewer.post(f"/api/v1/incidents/{incident.pk}/acknowledge/").status_code == 403
    assert viewer.post("/api/v1/projects/shop/incidents/", BODY, format="json").status_code == 403
    member = api_client_for(personas.member)
    assert member.delete(f"/api/v1/incidents/{incident.pk}/").status_code == 405
    assert Incident.objects.filter(pk=incident.pk).exists()


def test_postmortem_markdown_after_resolve(api_client_for, personas) -> None:  # noqa: ANN001
    finished_deployment(personas, personas.production, "1.5.0", minutes_ago=30)
    incident = open_incident(personas)
    client = api_client_for(personas.member)
    assert client.get(f"/api/v1/incidents/{incident.pk}/postmortem/").status_code == 404
    client.post(
        f"/api/v1/incidents/{incident.pk}/status/",
        {"status": "resolved", "message": "rolled back"},
        format="json",
    )
    response = client.get(f"/api/v1/incidents/{incident.pk}/postmortem/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/markdown")
    text = response.content.decode()
    assert "# Postmortem: INC-1 Checkout down" in text
    assert "## Suspect deployments" in text and "api 1.4.9 → 1.5.0" in text
    assert "## Timeline of INC-1" in text and "moved from investigating to resolved" in text


def test_in_the_openapi_schema(client, personas) -> None:  # noqa: ANN001
    client.force_login(personas.member)
    schema = client.get("/api/schema/", {"format": "json"}).json()
    for path in (
        "/api/v1/projects/{slug}/incidents/",
        "/api/v1/incidents/{id}/",
        "/api/v1/incidents/{id}/acknowledge/",
        "/api/v1/incidents/{id}/status/",
        "/api/v1/incidents/{id}/timeline/",
        "/api/v1/incidents/{id}/postmortem/",
    ):
        assert path in schema["paths"], path
