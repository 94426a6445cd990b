"""The public status page: opt-in, states from health checks, 90 day bars, public incidents with
public updates only, nothing internal in the rendered HTML, the same 404 when off, and caching."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from monitoring.incidents import services as incidents
from monitoring.models import Check, CheckRollup
from monitoring.oncall import status_page
from releasecenter import services as core

from .support import allow, make_check

INTERNAL_SERVICE = "ledger-internal-svc"
CHECK_NAME = "ledger deep probe"
CHECK_URL = "http://127.0.0.1:9/internal/ledger/health"


@pytest.fixture(autouse=True)
def _fresh_cache():  # noqa: ANN202
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def page(personas, django_capture_on_commit_callbacks):  # noqa: ANN001, ANN201
    admin_m = personas.membership(personas.admin)
    core.create_service(personas.admin, admin_m, name=INTERNAL_SERVICE, tier=1)
    allow(personas.production)
    failing = make_check(
        personas,
        CHECK_URL,
        environment=personas.production,
        service=INTERNAL_SERVICE,
        name=CHECK_NAME,
    )
    passing = make_check(
        personas,
        "http://127.0.0.1:9/web",
        environment=personas.production,
        service="web",
        name="web probe",
    )
    Check.objects.filter(pk=failing.pk).update(status=Check.Status.FAILING)
    Check.objects.filter(pk=passing.pk).update(status=Check.Status.PASSING)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    CheckRollup.objects.bulk_create(
        [
            CheckRollup(
                health_check=failing,
                span="day",
                start=today - timedelta(days=3),
                runs=100,
                failures=50,
            ),
            CheckRollup(
                health_check=failing,
                span="day",
                start=today - timedelta(days=2),
                runs=100,
                failures=2,
            ),
            CheckRollup(
                health_check=failing,
                span="day",
                start=today - timedelta(days=1),
                runs=100,
                failures=0,
            ),
        ]
    )
    with django_capture_on_commit_callbacks(execute=True):
        return status_page.configure(
            personas.admin,
            admin_m,
            enabled=True,
            title="Shop status",
            environment="production",
            groups=[
                {"name": "Payments", "services": [INTERNAL_SERVICE]},
                {"name": "Storefront", "services": ["web"]},
            ],
        )


def incidents_for(personas):  # noqa: ANN001, ANN201
    m = personas.membership(personas.lead)
    public = incidents.open_incident(
        personas.lead,
        m,
        title="Ledger primary lost quorum on db-7",
        severity="P1",
        environments=["production"],
    )
    status_page.publish_incident(personas.lead, m, public, title="Payments are failing")
    said = incidents.add_timeline_entry(
        personas.lead, m, public, kind="update", text="We are rerouting payments."
    )
    status_page.mark_update_public(personas.lead, m, said)
    incidents.add_timeline_entry(
        personas.lead, m, public, kind="note", text="liam thinks db-7 disk is full"
    )
    incidents.open_incident(
        personas.lead, m, title="Secret vendor breach", severity="P2", environments=["production"]
    )
    return public


def test_the_page_shows_states_bars_and_public_incidents_and_nothing_internal(personas, page):
    incidents_for(personas)
    response = Client().get("/status/shop/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Payments" in html and "Storefront" in html
    assert 'data-state="degraded"' not in html  # one failing check of one is an outage
    assert html.count('data-state="outage"') == 1 and html.count('data-state="operational"') == 1
    assert html.count('class="day ') == 2 * status_page.DAYS
    assert "day outage" in html and "day degraded" in html
    assert "Payments are failing" in html and "We are rerouting payments." in html
    for leak in (
        INTERNAL_SERVICE,
        CHECK_NAME,
        CHECK_URL,
        "127.0.0.1",
        "/internal/",
        "Ledger primary",
        "db-7",
        "Secret vendor breach",
        "liam",
        "alice-admin",
        "mia-member",
        "P1",
        "INC-",
        "csrf",
    ):
        assert leak not in html, leak


def test_only_the_author_makes_an_update_public(personas, page):
    from django.core.exceptions import PermissionDenied

    m = personas.membership(personas.lead)
    incident = incidents.open_incident(
        personas.lead, m, title="x", severity="P2", environments=["production"]
    )
    entry = incidents.add_timeline_entry(personas.lead, m, incident, kind="update", text="hi")
    with pytest.raises(PermissionDenied):
        status_page.mark_update_public(personas.member, personas.membership(personas.member), entry)


def test_a_disabled_page_is_the_same_404_as_no_project(
    personas, page, django_capture_on_commit_callbacks
):
    Client().get("/status/shop/")  # cached while on
    with django_capture_on_commit_callbacks(execute=True):
        status_page.configure(personas.admin, personas.membership(personas.admin), enabled=False)
    anonymous = Client()
    disabled = anonymous.get("/status/shop/")
    missing = anonymous.get("/status/no-such-project/")
    never_enabled = anonymous.get("/status/elsewhere/")
    assert disabled.status_code == missing.status_code == never_enabled.status_code == 404
    # Byte for byte, once the per-request CSRF token of the site's 404 page is set aside.
    bodies = {
        re.sub(rb'"X-CSRFToken": "[^"]*"', b"", r.content)
        for r in (disabled, missing, never_enabled)
    }
    assert len(bodies) == 1
    assert dict(disabled.headers).keys() == dict(missing.headers).keys()


def test_off_by_default(personas):
    assert Client().get("/status/shop/").status_code == 404


def test_etag_and_short_cache(personas, page):
    anonymous = Client()
    first = anonymous.get("/status/shop/")
    assert "max-age=10" in first["Cache-Control"] and "public" in first["Cache-Control"]
    etag = first["ETag"]
    again = anonymous.get("/status/shop/", HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again["ETag"] == etag and not again.content
    # A change shows once the short cache has expired (here: cleared).
    Check.objects.filter(name="web probe").update(status=Check.Status.FAILING)
    cache.clear()
    changed = anonymous.get("/status/shop/", HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag


def test_refresh_recent_updates_today_from_rollups(personas, page):
    check = Check.objects.get(name=CHECK_NAME)
    today = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    CheckRollup.objects.create(health_check=check, span="day", start=today, runs=10, failures=1)
    assert status_page.refresh_recent() >= 1
    day = page.groups.get(name="Payments").days.get(day=today.date())
    assert (day.runs, day.failures, day.state) == (10, 1, "degraded")
