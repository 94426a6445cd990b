"""The checks API: create (with the address guard's verdict), list, run, results, suites.

Network rule: the only connections go to TargetServers on 127.0.0.1. Refused addresses are
judged at creation without any connection (literal IPs, or "localhost" from /etc/hosts); at run
time the guard's inner backend is a SpyBackend, which records every connect the guard lets
through and itself refuses anything that is not loopback.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection

from monitoring.lib.testing import TargetServer
from monitoring.models import Check, CheckResult
from releasecenter.models import AuditEvent

from .support import allow, make_check, run


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


def create(client, slug: str = "shop", **body):  # noqa: ANN001, ANN003, ANN201
    body.setdefault("environment", "staging")
    body.setdefault("name", "api health")
    return client.post(f"/api/v1/projects/{slug}/checks/", body, format="json")


def test_create_list_and_run_a_check(api_client_for, personas, target):
    allow(personas.staging)
    client = api_client_for(personas.member)
    created = create(
        client,
        url=target.url("/ok"),
        assertions=[
            {"type": "status", "equals": 200},
            '$.status == "ok"',
            "$.items[0].name exists",
            "latency < 5000",
        ],
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["method"] == "GET" and body["status"] == "unknown"
    assert body["assertions"][1] == {
        "type": "json",
        "path": "$.status",
        "op": "equals",
        "value": "ok",
    }
    listed = client.get("/api/v1/projects/shop/checks/").json()
    assert [c["name"] for c in listed["results"]] == ["api health"]

    ran = client.post(f"/api/v1/checks/{body['id']}/run")
    assert ran.status_code == 200, ran.content
    result = ran.json()
    assert result["passed"] is True and result["status_code"] == 200
    assert result["failures"] == [] and result["latency_ms"] > 0
    assert target.paths() == ["/ok"]
    check = Check.objects.get(pk=body["id"])
    assert check.status == "passing" and check.last_status_code == 200
    assert CheckResult.objects.filter(health_check=check, trigger="api").count() == 1


def test_failing_assertions_come_back_with_expected_and_actual(api_client_for, personas, target):
    allow(personas.staging)
    client = api_client_for(personas.member)
    check_id = create(
        client,
        url=target.url("/ok"),
        assertions=['$.status == "degraded"', "status == 200", 'header X-Service == "other"'],
    ).json()["id"]
    result = client.post(f"/api/v1/checks/{check_id}/run").json()
    assert result["passed"] is False
    assert [(f["expected"], f["actual"]) for f in result["failures"]] == [
        ("degraded", "ok"),
        ("other", "release-center"),
    ]
    assert "status" in result["excerpt"]


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.1/", "private"),
        ("http://127.0.0.1:8080/", "loopback"),
        ("http://[::1]:8080/", "loopback"),
        ("http://0x7f000001/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[fe80::1]/", "link-local"),
        # A name that resolves (from /etc/hosts, no DNS query) to a refused address.
        ("http://localhost:8080/health", "loopback"),
        ("ftp://example.com/", "scheme"),
    ],
)
def test_guard_refuses_at_creation_naming_the_rule(api_client_for, personas, url, rule):
    client = api_client_for(personas.member)
    response = create(client, url=url)
    assert response.status_code == 400, response.content
    message = " ".join(response.json()["url"])
    assert f"rule: {rule}" in message
    assert not Check.objects.exists()
    assert not AuditEvent.objects.filter(verb="check.created").exists()


def test_allow_list_opens_loopback_but_never_the_database_or_redis(api_client_for, personas):
    from django.conf import settings

    allow(personas.staging, "127.0.0.0/8")
    client = api_client_for(personas.member)
    db = settings.DATABASES["default"]
    assert create(client, name="ok", url="http://127.0.0.1:9/").status_code == 201
    for port in (int(db["PORT"] or 5432), 6379):
        response = create(client, name=f"p{port}", url=f"http://127.0.0.1:{port}/")
        assert response.status_code == 400
        assert "rule: internal-service" in " ".join(response.json()["url"])


def test_bad_assertions_are_a_clear_400_and_nothing_is_saved(api_client_for, personas, target):
    allow(personas.staging)
    client = api_client_for(personas.member)
    for assertions, fragment in [
        ([{"type": "status", "equals": 999}], "not an HTTP status code"),
        ([{"type": "nope"}], "unknown type"),
        (["$.status = 'ok'"], "cannot read assertion"),
        ([{"type": "body_matches", "pattern": "("}], "invalid regular expression"),
        ({"type": "status"}, "list"),
    ]:
        response = create(client, url=target.url("/ok"), assertions=assertions)
        assert response.status_code == 400, assertions
        assert fragment in str(response.json()), response.json()
    assert not Check.objects.exists()


def test_outsiders_get_404_and_viewers_cannot_write(api_client_for, personas, target):
    allow(personas.staging)
    check = make_check(personas, target.url("/ok"))
    outsider = api_client_for(personas.outsider)
    assert outsider.get("/api/v1/projects/shop/checks/").status_code == 404
    assert create(outsider, url=target.url("/ok")).status_code == 404
    for path in (f"/api/v1/checks/{check.pk}/", f"/api/v1/checks/{check.pk}/results/"):
        assert outsider.get(path).status_code == 404
    assert outsider.post(f"/api/v1/checks/{check.pk}/run").status_code == 404
    assert outsider.delete(f"/api/v1/checks/{check.pk}/").status_code == 404
    viewer = api_client_for(personas.viewer)
    assert viewer.get(f"/api/v1/checks/{check.pk}/").status_code == 200
    assert viewer.post(f"/api/v1/checks/{check.pk}/run").status_code == 403
    assert create(viewer, name="x", url=target.url("/ok")).status_code == 403
    assert target.paths() == []


def test_secret_headers_are_sent_encrypted_at_rest_and_never_shown(
    api_client_for, personas, target
):
    allow(personas.staging)
    client = api_client_for(personas.member)
    secret = "Bearer s3cr3t-value-never-shown"
    body = create(
        client,
        url=target.url("/ok"),
        headers={"X-Plain": "visible"},
        secret_headers={"Authorization": secret},
    ).json()
    assert "secret_headers" not in body and body["secret_header_names"] == ["Authorization"]
    client.post(f"/api/v1/checks/{body['id']}/run")
    [request] = target.requests
    assert request.headers["Authorization"] == secret
    assert request.headers["X-Plain"] == "visible"

    with connection.cursor() as cursor:
        cursor.execute("SELECT secret_headers FROM monitoring_check WHERE id = %s", [body["id"]])
        stored = cursor.fetchone()[0]
    assert secret not in stored and "Authorization" not in stored
    assert secret not in str(client.get(f"/api/v1/checks/{body['id']}/").json())
    events = str(list(AuditEvent.objects.values("before", "after", "data")))
    assert secret not in events and "Authorization" in events

    # PATCH without secret_headers keeps them; {} removes them.
    client.patch(f"/api/v1/checks/{body['id']}/", {"name": "renamed"}, format="json")
    assert Check.objects.get(pk=body["id"]).secret_header_values() == {"Authorization": secret}
    client.patch(f"/api/v1/checks/{body['id']}/", {"secret_headers": {}}, format="json")
    assert Check.objects.get(pk=body["id"]).secret_header_names == []


def test_results_are_paginated_newest_first(api_client_for, personas, target):
    allow(personas.staging)
    check = make_check(personas, target.url("/ok"))
    for _ in range(3):
        run(check)
    client = api_client_for(personas.viewer)
    page = client.get(f"/api/v1/checks/{check.pk}/results/?limit=2").json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]
    times = [r["started_at"] for r in page["results"]]
    assert times == sorted(times, reverse=True)
    rest = client.get(page["next"]).json()
    assert len(rest["results"]) == 1


def test_suites_run_their_steps_in_order_as_one_unit(api_client_for, personas, target):
    allow(personas.staging)
    client = api_client_for(personas.member)
    created = client.post(
        "/api/v1/projects/shop/suites/",
        {
            "environment": "staging",
            "name": "smoke",
            "steps": [
                {
                    "name": "health is ok",
                    "url": target.url("/ok"),
                    "assertions": ['$.status == "ok"'],
                },
                {
                    "name": "admin bypass is refused",
                    "url": target.url("/401"),
                    "headers": {"X-Admin-Bypass": "1"},
                    "assertions": ["status == 401"],
                },
                {
                    "name": "text says ready",
                    "url": target.url("/text"),
                    "assertions": ['body matches "build [0-9.]+ ready"'],
                },
            ],
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    suite = created.json()
    assert [s["name"] for s in suite["steps"]] == [
        "health is ok",
        "admin bypass is refused",
        "text says ready",
    ]
    result = client.post(f"/api/v1/suites/{suite['id']}/run").json()
    assert result["passed"] is True, result
    assert [s["step"] for s in result["steps"]] == [s["name"] for s in suite["steps"]]
    assert target.paths() == ["/ok", "/401", "/text"]

    # A step that fails makes the suite fail, naming the step.
    step_id = suite["steps"][2]["id"]
    client.patch(
        f"/api/v1/checks/{step_id}/", {"assertions": ['body contains "nope"']}, format="json"
    )
    failed = client.post(f"/api/v1/suites/{suite['id']}/run").json()
    assert failed["passed"] is False
    assert [f["step"] for f in failed["failures"]] == ["text says ready"]
    results = client.get(f"/api/v1/suites/{suite['id']}/results/").json()
    assert [r["passed"] for r in results["results"]] == [False, True]


def test_a_suite_step_refused_by_the_guard_fails_the_whole_create(api_client_for, personas, target):
    allow(personas.staging)
    client = api_client_for(personas.member)
    response = client.post(
        "/api/v1/projects/shop/suites/",
        {
            "environment": "staging",
            "name": "smoke",
            "steps": [
                {"name": "ok", "url": target.url("/ok")},
                {"name": "metadata", "url": "http://169.254.169.254/"},
            ],
        },
        format="json",
    )
    assert response.status_code == 400
    assert "Step 2" in str(response.json()) and "link-local" in str(response.json())
    assert not Check.objects.exists()


def test_environment_allow_list_needs_an_admin_and_is_validated(api_client_for, personas):
    path = "/api/v1/projects/shop/environments/staging/monitoring/"
    lead = api_client_for(personas.lead)
    assert lead.get(path).json()["allow_list"] == []
    assert lead.patch(path, {"allow_list": ["127.0.0.1"]}, format="json").status_code == 403
    assert (
        lead.patch(path, {"contact_emails": ["oncall@example.com"]}, format="json").status_code
        == 200
    )
    admin = api_client_for(personas.admin)
    bad = admin.patch(path, {"allow_list": ["not a host!"]}, format="json")
    assert bad.status_code == 400
    ok = admin.patch(path, {"allow_list": ["127.0.0.1", "10.20.0.0/16"]}, format="json")
    assert ok.status_code == 200 and ok.json()["allow_list"] == ["127.0.0.1", "10.20.0.0/16"]
    assert api_client_for(personas.outsider).get(path).status_code == 404


def test_schema_documents_the_monitoring_endpoints(api_client_for, personas):
    schema = api_client_for(personas.member).get("/api/schema/?format=json").json()
    for path in (
        "/api/v1/projects/{slug}/checks/",
        "/api/v1/checks/{id}/run",
        "/api/v1/checks/{id}/results/",
        "/api/v1/projects/{slug}/suites/",
        "/api/v1/suites/{id}/run",
    ):
        assert path in schema["paths"], path


def test_a_check_without_assertions_expects_a_success_status(api_client_for, personas, target):
    allow(personas.staging)
    client = api_client_for(personas.member)
    body = create(client, url=target.url("/503")).json()
    assert body["assertions"] == [{"type": "status", "in": [200, 204]}]
    assert client.post(f"/api/v1/checks/{body['id']}/run").json()["passed"] is False
