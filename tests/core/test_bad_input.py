"""Bad input is a 400 (or a 404) with a message, JSON on the API, and changes nothing: never a
500. Each case below was a server error; the fixes are by class (a middleware, the API's JSON
parser, one integer helper, one date validator), so the cases stand for their kind."""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.test import Client, RequestFactory

from checklists.models import ChecklistTemplate, Run
from deployments.models import Deployment, Release
from monitoring.models import Check
from releasecenter.models import ApiToken


def _detail(response) -> str:  # noqa: ANN001
    assert response["Content-Type"] == "application/json", response.content[:200]
    return json.dumps(response.json())


def _post_json(client, url: str, body: str):  # noqa: ANN001, ANN202
    return client.generic("POST", url, body, content_type="application/json")


@pytest.fixture
def page(personas):  # noqa: ANN001, ANN201
    client = Client()
    client.force_login(personas.admin)
    return client


@pytest.fixture
def api(personas, api_client_for):  # noqa: ANN001, ANN201
    return api_client_for(personas.admin)


# --- NUL characters -------------------------------------------------------------------------


def test_nul_in_a_path_segment_query_or_form_field_is_a_400(personas, page, api):
    response = page.get("/p/shop/environments/sta%00ging/")
    assert response.status_code == 400 and "NUL" in response.content.decode()
    response = api.get("/api/v1/projects/shop/environments/sta%00ging/monitoring/")
    assert response.status_code == 400 and "NUL" in _detail(response)
    response = api.get("/api/v1/projects/shop/deployments/", {"status": "a\x00b"})
    assert response.status_code == 400 and "status" in _detail(response)
    response = page.get("/p/shop/releases/", {"status": "a\x00b"})
    assert response.status_code == 400
    response = page.post("/tokens/", {"name": "ci\x00bot"})
    assert response.status_code == 400 and "name" in response.content.decode()
    assert not ApiToken.objects.filter(name__startswith="ci").exists()


def test_nul_in_a_json_string_is_a_400_naming_the_field(personas, api):
    response = _post_json(
        api, "/api/v1/projects/shop/releases/", '{"version": "1.0.0", "notes": "a\\u0000b"}'
    )
    assert response.status_code == 400 and "notes" in _detail(response)
    response = _post_json(
        api,
        "/api/v1/projects/shop/releases/",
        '{"version": "1.0.0", "environments": ["prod\\u0000uction"]}',
    )
    assert response.status_code == 400 and "environments[0]" in _detail(response)
    assert not Release.objects.exists()


# --- Digits that are not ASCII -------------------------------------------------------------


def test_non_ascii_digits_are_not_numbers(personas, page):
    from releasecenter import stream

    assert page.get("/events/stream", {"topic": "project:\u00b2"}).status_code == 404
    assert page.get("/events/stream", {"topic": "project:\u0663"}).status_code == 404
    request = RequestFactory().get("/events/stream", {"last_event_id": "\u00b2"})
    assert stream._parse_last_id(request) == 0
    response = page.post(
        "/p/shop/environments/staging/policy/", {"action": "delete-window", "window": "\u00b2"}
    )
    assert response.status_code == 404


# --- JSON of the wrong shape ---------------------------------------------------------------


@pytest.mark.parametrize("body", ["null", "5", '"x"', "[]", "[1, 2]", "true"])
def test_a_json_body_that_is_not_an_object_is_a_400(personas, api, body):
    for url in (
        "/api/v1/projects/shop/checklist-templates/import",
        "/api/v1/projects/shop/releases/",
        "/api/v1/projects/shop/checks/",
    ):
        response = _post_json(api, url, body)
        assert response.status_code == 400, (url, body)
        assert "JSON object" in _detail(response)
    assert not ChecklistTemplate.objects.exists()


def test_deeply_nested_json_is_refused_before_parsing(personas, api):
    deep = "[" * 100_000
    for url in (
        "/api/v1/projects/shop/checklist-templates/import",
        "/api/v1/projects/shop/releases/",
        "/api/v1/projects/shop/checks/",
    ):
        response = _post_json(api, url, deep)
        assert response.status_code == 400, url
        assert "nested" in _detail(response)
    # Ordinary nesting is fine: a deep but sane object still parses.
    ok = _post_json(
        api,
        "/api/v1/projects/shop/releases/",
        '{"version": "2.0.0", "commit_sha": "abc1234", "notes": "[[[", "x": [[[{"y": []}]]]}',
    )
    assert ok.status_code == 201, ok.content


# --- A row deleted while a request works on it ----------------------------------------------


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_changing_a_check_that_is_deleted_meanwhile_is_a_404(
    transactional_db, personas, api_client_for, method
):
    """The request finds the check, then waits for its row lock while another transaction
    deletes it: the service's locked read finds nothing."""
    from django.db import connection, transaction

    from tests.monitoring.support import allow, make_check

    allow(personas.staging)
    check = make_check(personas, "http://127.0.0.1:9/health")
    client = api_client_for(personas.member)
    locked, results = threading.Event(), {}

    def delete_under_lock() -> None:
        try:
            with transaction.atomic():
                Check.objects.select_for_update().get(pk=check.pk)
                locked.set()
                time.sleep(1.5)  # the request is now waiting for this row
                Check.objects.filter(pk=check.pk).delete()
        finally:
            connection.close()

    def change() -> None:
        try:
            call = getattr(client, method)
            results["response"] = call(
                f"/api/v1/checks/{check.pk}/", {"name": "renamed"}, format="json"
            )
        finally:
            connection.close()

    deleter = threading.Thread(target=delete_under_lock)
    deleter.start()
    assert locked.wait(10)
    changer = threading.Thread(target=change)
    changer.start()
    deleter.join(20)
    changer.join(20)
    response = results["response"]
    assert response.status_code == 404, response.content
    assert _detail(response)


# --- Dates out of range ----------------------------------------------------------------------


def _template(personas):  # noqa: ANN001, ANN202
    from checklists import services

    return services.import_runbook(
        personas.member, personas.project, "# Runbook\n\n## Steps\n\n- [ ] One\n"
    ).template


@pytest.mark.parametrize("moment", ["9999-12-31T23:00:00Z", "0001-01-01T00:00:00Z", "1970-01-01"])
def test_dates_out_of_range_are_refused_on_the_api(personas, api, moment):
    template = _template(personas)
    response = api.post(
        "/api/v1/projects/shop/checklist-runs/",
        {"template_id": template.pk, "planned_start": moment},
        format="json",
    )
    assert response.status_code == 400 and "planned_start" in _detail(response)
    assert "2000" in _detail(response)
    response = api.post(
        "/api/v1/projects/shop/releases/",
        {"version": "3.0.0", "commit_sha": "abc1234", "planned_start": moment},
        format="json",
    )
    assert response.status_code == 400 and "planned_start" in _detail(response)
    assert not Run.objects.exists() and not Release.objects.exists()


def test_dates_out_of_range_are_refused_in_the_forms(personas, page):
    template = _template(personas)
    response = page.post(
        f"/p/shop/checklists/templates/{template.pk}/runs/",
        {"planned_start": "9999-12-31T23:00"},
        follow=True,
    )
    assert "between 2000 and 2100" in response.content.decode()
    assert not Run.objects.exists()
    response = page.post(
        "/p/shop/releases/new/",
        {"version": "4.0.0", "commit_sha": "abc1234", "planned_start": "0001-01-01T00:00"},
    )
    assert "between 2000 and 2100" in response.content.decode()
    assert not Release.objects.exists()
    assert not Deployment.objects.exists()


# --- JSON typed into forms ---------------------------------------------------------------------


def test_json_typed_into_a_form_is_a_form_error(personas):
    from checklists.forms import ItemForm
    from monitoring.forms import CheckForm
    from releasecenter.validation import load_json

    deep = "[" * 100_000
    item = ItemForm(data={"text": "Deploy", "severity": "none", "automation": deep})
    assert not item.is_valid() and "automation" in item.errors
    check = CheckForm(
        data={"name": "api", "method": "GET", "assertions": "{" * 100_000},
        project=personas.project,
    )
    assert not check.is_valid() and "assertions" in check.errors
    # An escaped NUL becomes a real one once parsed: jsonb refuses it, so the form does.
    with pytest.raises(ValueError, match="NUL"):
        load_json('{"a": ["x\\u0000y"]}')
