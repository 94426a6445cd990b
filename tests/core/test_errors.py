"""Errors under DEBUG=0: the app's own pages for people, JSON for API clients, whichever layer
raised (URL resolving, middleware, CSRF, the view), and no traceback or debug page anywhere."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client, override_settings

FAILING_URLS = "tests.core.urls_with_failures"


def _json_detail(response) -> str:  # noqa: ANN001
    assert response["Content-Type"] == "application/json", (response.status_code, response.content)
    detail = response.json()["detail"]
    assert detail and "Traceback" not in detail
    return detail


def _own_page(response) -> str:  # noqa: ANN001
    html = response.content.decode()
    assert response["Content-Type"].startswith("text/html")
    assert 'class="container-fluid topbar"' in html  # the app's base layout
    assert "Traceback" not in html and "Raised by" not in html and "DEBUG" not in html
    return html


def test_api_errors_are_json_whichever_layer_raised(db, personas, api_client_for, settings):
    assert not settings.DEBUG
    api = api_client_for(personas.member)
    # URL resolving (Http404 before any view).
    assert api.get("/api/v1/nowhere/").status_code == 404
    assert _json_detail(api.get("/api/v1/nowhere/")) == "Not found."
    # Middleware: a Host header the site does not answer to (SuspiciousOperation).
    response = api.get("/api/v1/projects/", HTTP_HOST="evil.example")
    assert response.status_code == 400
    _json_detail(response)
    # CSRF: a session-authenticated form POST to a page view without a token, as JSON client.
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(personas.member)
    response = browser.post("/tokens/", {"name": "x"}, HTTP_ACCEPT="application/json")
    assert response.status_code == 403
    assert "CSRF" in _json_detail(response)
    # 405 from a page view, asked for by an API client.
    response = browser.get("/tokens/1/revoke/", HTTP_ACCEPT="application/json")
    assert response.status_code == 405 and response["Allow"] == "POST"
    _json_detail(response)
    # 401/403/405 of the REST framework stay JSON.
    assert Client().get("/api/v1/projects/").json()["detail"]
    assert api.delete("/api/v1/projects/").status_code == 405
    _json_detail(api.delete("/api/v1/projects/"))


@override_settings(ROOT_URLCONF=FAILING_URLS)
def test_a_server_error_is_json_for_the_api_and_the_own_page_for_people(db, personas):
    client = Client(raise_request_exception=False)
    client.force_login(personas.member)
    response = client.get("/api/v1/broken/")
    assert response.status_code == 500
    assert "a bug in a view" not in _json_detail(response)
    response = client.get("/broken/")
    assert response.status_code == 500
    html = _own_page(response)
    assert "Something went wrong" in html and "a bug in a view" not in html
    assert response["X-Request-ID"] in html  # a reference the user can quote


def test_pages_get_the_apps_own_404_403_and_csrf_pages(db, personas):
    client = Client(enforce_csrf_checks=True)
    client.force_login(personas.member)
    html = _own_page(client.get("/p/shop/no-such-page/"))
    assert "Not found" in html and "your projects" in html
    assert client.get("/p/shop/no-such-page/").status_code == 404
    html = _own_page(client.get("/p/elsewhere/"))  # another project: a 404, not a 403
    assert "Not found" in html
    response = client.post("/tokens/", {"name": "x"})
    assert response.status_code == 403
    assert "CSRF" in _own_page(response)


@pytest.mark.parametrize("charset", ["latin-1", "utf-16"])
def test_a_form_in_another_charset_is_a_400_page_not_a_server_crash(
    transactional_db, personas, charset
):
    """Django refuses forms that are not UTF-8 with BadRequest; its stock 400 handler then ran the
    CSRF check again, which read the body again and raised again, up to the ASGI server."""
    from releasecenter.asgi import application

    session = Client()
    session.force_login(personas.member)
    token = _get_new_csrf_string()
    body = f"csrfmiddlewaretoken={token}&name=caf\u00e9".encode(charset)
    headers = {
        "Content-Type": f"application/x-www-form-urlencoded; charset={charset}",
        "Cookie": f"csrftoken={token}; sessionid={session.cookies['sessionid'].value}",
    }

    async def post(accept: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.post(
                "/tokens/", content=body, headers={**headers, "Accept": accept}
            )

    page = asyncio.run(post("text/html"))
    assert page.status_code == 400, page.text
    assert "UTF-8" in page.text and 'class="container-fluid topbar"' in page.text
    api = asyncio.run(post("application/json"))
    assert api.status_code == 400 and "UTF-8" in api.json()["detail"]
