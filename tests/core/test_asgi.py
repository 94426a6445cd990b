"""The ASGI entry point: sync views take Django's sync middleware chain in one hop, the async
event stream takes the async chain, and both answer as the rest of the app expects."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from asgiref.testing import ApplicationCommunicator
from django.test import override_settings

from releasecenter import asgi


def test_only_async_views_take_the_async_chain():
    assert asgi._serves_async_view("/events/stream") is True
    assert asgi._serves_async_view("/health") is False
    assert asgi._serves_async_view("/p/shop/checklists/runs/1/items/2/tick/") is False
    assert asgi._serves_async_view("/no/such/page/") is False


class ModeProbe:
    """A middleware that can run in both modes and notes which one a request took."""

    sync_capable = async_capable = True
    seen: list[str] = []

    def __init__(self, get_response) -> None:  # noqa: ANN001
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request):  # noqa: ANN001, ANN204
        if self.async_mode:
            return self._acall(request)
        ModeProbe.seen.append("sync")
        return self.get_response(request)

    async def _acall(self, request):  # noqa: ANN001, ANN202
        ModeProbe.seen.append("async")
        return await self.get_response(request)


@pytest.mark.django_db(transaction=True)
def test_sync_views_take_the_sync_chain_and_the_stream_the_async_one(settings):
    probe = f"{__name__}.ModeProbe"
    with override_settings(MIDDLEWARE=[probe, *settings.MIDDLEWARE]):
        handler = asgi.Handler()
    ModeProbe.seen = []
    status, _headers, _body = request("/login/", app=handler)
    assert status == 200
    status, _headers, _body = request("/events/stream", app=handler)
    assert status == 401
    # Django's stock ASGIHandler would have taken the async chain both times.
    assert ModeProbe.seen == ["sync", "async"]


def request(
    path: str, method: str = "GET", headers: list | None = None, app=None
) -> tuple[int, dict, bytes]:
    async def call() -> tuple[int, dict, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), *(headers or [])],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        app_ = ApplicationCommunicator(app or asgi.application, scope)
        await app_.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await app_.receive_output(10)
        body = b""
        while True:
            message = await app_.receive_output(10)
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await app_.wait(10)
        return start["status"], {k.lower(): v for k, v in start["headers"]}, body

    return asyncio.run(call())


@pytest.mark.django_db(transaction=True)
def test_a_sync_view_runs_behind_every_middleware():
    status, headers, body = request("/login/")
    assert status == 200 and b"<form" in body
    # Security, clickjacking, CSP and request-id middleware all ran around the view.
    assert headers[b"x-frame-options"] == b"DENY"
    assert b"content-security-policy" in headers and b"x-request-id" in headers
    assert b"csrftoken" in headers.get(b"set-cookie", b"")


@pytest.mark.django_db(transaction=True)
def test_a_post_without_csrf_token_is_refused_in_the_sync_chain():
    status, _headers, _body = request(
        "/login/",
        method="POST",
        headers=[(b"content-type", b"application/x-www-form-urlencoded")],
    )
    assert status == 403


@pytest.mark.django_db(transaction=True)
def test_unknown_pages_and_the_anonymous_stream_answer_as_before():
    status, _headers, _body = request("/no/such/page/")
    assert status == 404
    status, _headers, body = request("/events/stream")
    assert status == 401 and b"Log in" in body


def test_a_malformed_switch_interval_stops_the_web_process_with_a_clear_message(monkeypatch):
    for raw in ("fast", "0", "-1", "5"):
        monkeypatch.setenv("WEB_GIL_SWITCH_INTERVAL", raw)
        with pytest.raises(SystemExit, match="WEB_GIL_SWITCH_INTERVAL must be seconds"):
            asgi._switch_interval()
    monkeypatch.setenv("WEB_GIL_SWITCH_INTERVAL", "0.002")
    assert asgi._switch_interval() == 0.002
