"""The release list, on the page and in the API: filters by environment and status, pages, and a
number of queries that does not grow with the number of releases."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from deployments import services
from deployments.release_views import PAGE_SIZE


def make(personas, version, environments=None):
    return services.create_release(
        personas.member,
        personas.membership(personas.member),
        version=version,
        commit_sha="abcdef123456",
        environments=environments,
    )


def versions(response) -> list[str]:
    return [release.version for release in response.context["page"].object_list]


@pytest.fixture
def statuses(personas):
    """draft: 1.0.0 everywhere; 2.0.0 submitted: staging approved (it needs nothing),
    production in review (it needs a sign-off); 3.0.0 cancelled in production."""
    services.set_signoff_requirements(
        personas.admin,
        personas.membership(personas.admin),
        personas.production,
        [("Security Review", 1)],
    )
    member_m = personas.membership(personas.member)
    make(personas, "1.0.0")
    services.submit_for_review(personas.member, member_m, make(personas, "2.0.0"))
    cancelled = make(personas, "3.0.0", ["production"])
    services.cancel_target(
        personas.lead, personas.membership(personas.lead), cancelled, "production"
    )
    return personas


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["3.0.0", "2.0.0", "1.0.0"]),
        ("?status=draft", ["1.0.0"]),
        ("?status=in_review", ["2.0.0"]),
        ("?status=approved", ["2.0.0"]),
        ("?status=cancelled", ["3.0.0"]),
        ("?environment=staging", ["2.0.0", "1.0.0"]),
        ("?environment=production&status=in_review", ["2.0.0"]),
        # Environment and status must hold for the same target: 2.0.0 is approved in staging.
        ("?environment=production&status=approved", []),
        ("?environment=staging&status=cancelled", []),
    ],
)
def test_page_filters_by_status_and_environment(client, statuses, query, expected):
    client.force_login(statuses.viewer)
    response = client.get(f"/p/{statuses.project.slug}/releases/{query}")
    assert response.status_code == 200
    assert versions(response) == expected


def test_page_reports_a_bad_status_filter(client, statuses):
    client.force_login(statuses.viewer)
    response = client.get(
        f"/p/{statuses.project.slug}/releases/?status=shipped&environment=staging"
    )
    body = response.content.decode()
    assert "status: Select a valid choice. shipped is not one of the available choices." in body
    # The filter that is valid still applies.
    assert versions(response) == ["2.0.0", "1.0.0"]


def test_api_filters_and_refuses_a_bad_status_with_400(api_client_for, statuses):
    client = api_client_for(statuses.member)
    base = f"/api/v1/projects/{statuses.project.slug}/releases/"
    body = client.get(base + "?environment=production&status=in_review").json()
    assert [r["version"] for r in body["results"]] == ["2.0.0"]
    bad = client.get(base + "?status=shipped")
    assert bad.status_code == 400
    assert bad.json()["status"].startswith("Unknown status 'shipped'; use one of draft, in_review")


def test_second_page_holds_the_oldest_releases(client, personas):
    count = PAGE_SIZE + 5
    for i in range(count):
        make(personas, f"1.{i}.0", ["production"] if i % 2 else None)
    make(personas, "9.9.9", ["staging"])
    client.force_login(personas.member)
    base = f"/p/{personas.project.slug}/releases/?environment=production"
    first = client.get(base)
    assert first.context["page"].paginator.count == count
    assert versions(first) == [f"1.{i}.0" for i in range(count - 1, 4, -1)]
    second = client.get(base + "&page=2")
    assert versions(second) == ["1.4.0", "1.3.0", "1.2.0", "1.1.0", "1.0.0"]
    body = second.content.decode()
    assert "Page 2 of 2" in body
    assert 'href="?environment=production&page=1"' in body
    assert "9.9.9" not in body


def test_list_queries_do_not_grow_with_releases(client, personas):
    client.force_login(personas.member)
    counts = {}
    made = 0
    for total in (3, PAGE_SIZE + 10):
        while made < total:
            make(personas, f"2.{made}.0")
            made += 1
        with CaptureQueriesContext(connection) as queries:
            response = client.get(f"/p/{personas.project.slug}/releases/")
        assert response.status_code == 200
        shown = min(total, PAGE_SIZE)
        assert len(re.findall(r"<strong>2\.\d+\.0</strong>", response.content.decode())) == shown
        counts[total] = len(queries)
    assert 0 < counts[3] == counts[PAGE_SIZE + 10], counts
