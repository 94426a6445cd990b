"""Probe kinds through the service, the API and the pages: TCP checks, certificates on the
Health page, an environment's proxy and client certificate.

Only servers the tests start on 127.0.0.1 are contacted.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.test import Client
from django.utils import timezone

from monitoring import probes, services
from monitoring.lib.testing import SpyBackend, TargetServer
from monitoring.models import Check, EnvironmentMonitoring
from releasecenter.models import AuditEvent

from .support import allow, make_check, run
from .test_probes import _LineServer, self_signed, server_context


def create(client, slug: str = "shop", **body):  # noqa: ANN001, ANN003, ANN201
    body.setdefault("environment", "staging")
    body.setdefault("name", "redis port")
    return client.post(f"/api/v1/projects/{slug}/checks/", body, format="json")


def test_a_tcp_check_is_created_run_and_recorded_through_the_api(api_client_for, personas):
    allow(personas.staging)
    client = api_client_for(personas.member)
    with _LineServer() as server:
        created = create(
            client,
            probe="tcp",
            url=f"tcp://127.0.0.1:{server.port}",
            body="PING",
            expect=r"\+PONG",
            assertions=["latency < 5000"],
        )
        assert created.status_code == 201, created.json()
        body = created.json()
        assert body["probe"] == "tcp" and body["expect"] == r"\+PONG"
        ran = client.post(f"/api/v1/checks/{body['id']}/run").json()
    assert ran["passed"] is True, ran
    check = Check.objects.get(pk=body["id"])
    assert check.status == Check.Status.PASSING
    assert check.last_summary.startswith("TCP connected in")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"probe": "udp", "url": "tcp://127.0.0.1:6380"}, "probe"),
        ({"probe": "tcp", "url": "tcp://127.0.0.1"}, "url"),
        ({"probe": "tcp", "url": "http://127.0.0.1:80/"}, "url"),
        ({"probe": "tcp", "url": "tcp://127.0.0.1:6380", "expect": "("}, "expect"),
        (
            {"probe": "tcp", "url": "tcp://127.0.0.1:6380", "follow_redirects": True},
            "follow_redirects",
        ),
        (
            {"probe": "tcp", "url": "tcp://127.0.0.1:6380", "assertions": ["status == 200"]},
            "assertions",
        ),
        ({"probe": "http", "url": "http://127.0.0.1:8/", "expect": "ok"}, "expect"),
    ],
)
def test_bad_probe_fields_are_400s_naming_the_field(api_client_for, personas, body, field):
    allow(personas.staging)
    response = create(api_client_for(personas.member), **body)
    assert response.status_code == 400, response.json()
    assert field in response.json(), response.json()
    assert not Check.objects.exists()


def test_tcp_ports_the_guard_refuses_are_400_at_creation(api_client_for, personas):
    client = api_client_for(personas.member)
    db_port = int(settings.DATABASES["default"].get("PORT") or 5432)
    # Loopback is not allowed in staging at all yet.
    refused = create(client, probe="tcp", url="tcp://127.0.0.1:6380")
    assert refused.status_code == 400
    assert "rule: loopback" in refused.json()["url"][0]
    metadata = create(client, probe="tcp", url="tcp://169.254.169.254:80")
    assert "rule: link-local" in metadata.json()["url"][0]
    allow(personas.staging, "127.0.0.1")
    database = create(client, probe="tcp", url=f"tcp://127.0.0.1:{db_port}")
    assert database.status_code == 400
    assert "rule: internal-service" in database.json()["url"][0]
    assert not Check.objects.exists()


def test_a_tcp_port_refused_after_creation_is_refused_at_connect(personas):
    allow(personas.staging)
    with _LineServer() as server:
        check = make_check(personas, f"tcp://127.0.0.1:{server.port}", probe="tcp")
        allow(personas.staging, "")
        spy = SpyBackend()
        outcome = run(check, inner_backend=spy)
        assert server.lines == []
    assert outcome.passed is False
    assert outcome.failures[0]["rule"] == "loopback"
    assert spy.attempts == []


def test_certificates_are_recorded_and_listed_soonest_first(client, personas, tmp_path: Path):
    allow(personas.staging)
    soon_cert, soon_key, soon_after = self_signed(days=5, name="soon.test")
    later_cert, later_key, _ = self_signed(days=20, name="later.test")
    far_cert, far_key, _ = self_signed(days=200, name="far.test")
    trusted = soon_cert + later_cert + far_cert
    servers = [
        TargetServer(tls=server_context(c, k, tmp_path))
        for c, k in ((later_cert, later_key), (soon_cert, soon_key), (far_cert, far_key))
    ]
    try:
        checks = []
        for name, server in zip(("later", "soon", "far"), servers, strict=True):
            server.start()
            checks.append(make_check(personas, server.url("/ok"), name=name))
        outcomes = services.run_units(checks, trigger="manual", trust=trusted)
    finally:
        for server in servers:
            server.stop()
    assert all(o.passed for o in outcomes), [o.error for o in outcomes]
    soon = Check.objects.get(name="soon")
    assert soon.cert_not_after == soon_after
    assert soon.cert_names == ["soon.test", "127.0.0.1"]
    assert soon.cert_issuer == "soon.test"
    assert soon.tls_version.startswith("TLSv1.")

    client.force_login(personas.member)
    html = client.get("/p/shop/health/").content.decode()
    listed = html[html.index("Certificates expiring within 30 days") :]
    assert listed.index("soon.test") < listed.index("later.test")
    assert "far.test" not in listed
    assert soon_after.strftime("%Y-%m-%d") in listed

    # Six months on, the far one is due too, and comes last.
    with time_machine.travel(timezone.now() + timedelta(days=180)):
        listed = probes.expiring_certificates(Check.objects.filter(project=personas.project))
        assert [c.name for c in listed] == ["soon", "later", "far"]


def test_environment_proxy_is_judged_stored_encrypted_and_shown(api_client_for, personas):
    admin = api_client_for(personas.admin)
    url = "/api/v1/projects/shop/environments/staging/monitoring/"
    refused = admin.patch(url, {"proxy_url": "http://127.0.0.1:3128"}, format="json")
    assert refused.status_code == 400
    assert "rule: loopback" in refused.json()["proxy_url"][0]
    garbage = admin.patch(url, {"proxy_url": "socks5://127.0.0.1:1080"}, format="json")
    assert garbage.status_code == 400 and "proxy_url" in garbage.json()
    admin.patch(url, {"allow_list": ["127.0.0.1"]}, format="json")
    saved = admin.patch(url, {"proxy_url": "http://user:secret@127.0.0.1:3128"}, format="json")
    assert saved.status_code == 200, saved.json()
    assert saved.json()["proxy"] == "http://127.0.0.1:3128"
    assert "secret" not in str(saved.json())
    row = EnvironmentMonitoring.objects.get(environment=personas.staging)
    assert row.proxy_url == "http://user:secret@127.0.0.1:3128"
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT proxy_url FROM monitoring_environmentmonitoring WHERE id = %s", [row.pk]
        )
        assert "secret" not in cursor.fetchone()[0]
    event = AuditEvent.objects.filter(verb="environment.monitoring_updated").last()
    assert "secret" not in str(event.after) and event.after["proxy"] == "http://127.0.0.1:3128"
    # The check page says the environment's checks go through the proxy (not its password).
    check = make_check(personas, "http://127.0.0.1:9/health", name="via proxy")
    browser = Client()
    browser.force_login(personas.member)
    html = browser.get(f"/p/shop/health/checks/{check.pk}/").content.decode()
    assert "via proxy <code>http://127.0.0.1:3128</code>" in html and "secret" not in html
    # A lead may change contacts but not the proxy.
    lead = api_client_for(personas.lead)
    assert lead.patch(url, {"proxy_url": ""}, format="json").status_code == 403


def test_client_certificate_must_match_its_key(api_client_for, personas):
    admin = api_client_for(personas.admin)
    url = "/api/v1/projects/shop/environments/staging/monitoring/"
    cert, key, _ = self_signed(days=30, name="rc-client")
    _, other_key, _ = self_signed(days=30, name="other")
    mismatch = admin.patch(
        url, {"client_certificate": cert, "client_key": other_key}, format="json"
    )
    assert mismatch.status_code == 400 and "client_key" in mismatch.json()
    saved = admin.patch(url, {"client_certificate": cert, "client_key": key}, format="json")
    assert saved.status_code == 200, saved.json()
    assert "client_key" not in saved.json()
    row = EnvironmentMonitoring.objects.get(environment=personas.staging)
    assert row.client_key == key.strip()


def test_the_environment_page_sets_a_proxy_for_admins_only(client, personas):
    page = "/p/shop/health/environments/staging/"
    client.force_login(personas.admin)
    refused = client.post(
        page, {"action": "settings", "env-proxy_url": "http://127.0.0.1:3128"}
    ).content.decode()
    assert "rule: loopback" in refused
    saved = client.post(
        page,
        {
            "action": "settings",
            "env-allow_list": "127.0.0.1",
            "env-allow_public": "on",
            "env-proxy_url": "http://ops:hunter2@127.0.0.1:3128",
        },
    )
    assert saved.status_code == 302
    html = client.get(page).content.decode()
    assert "Checks go through http://127.0.0.1:3128." in html and "hunter2" not in html
    # A lead saves contacts; the proxy stays as the admin set it.
    client.force_login(personas.lead)
    client.post(
        page,
        {"action": "settings", "env-contact_emails": "ops@example.com", "env-proxy_url": ""},
    )
    row = EnvironmentMonitoring.objects.get(environment=personas.staging)
    assert row.proxy_url == "http://ops:hunter2@127.0.0.1:3128"
    assert row.emails() == ["ops@example.com"]
    client.force_login(personas.admin)
    client.post(
        page, {"action": "settings", "env-allow_list": "127.0.0.1", "env-clear_proxy": "on"}
    )
    row.refresh_from_db()
    assert row.proxy_url == ""
