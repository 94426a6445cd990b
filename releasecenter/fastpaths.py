"""ASGI routes served before Django: a registry that apps fill in their AppConfig.ready().

A few endpoints must stay cheap under load and need nothing Django's request machinery gives
(sessions, CSRF, templates): heartbeat pings from cron jobs, for one. `releasecenter.asgi`
hands a request whose path starts with a registered prefix straight to the registered ASGI
app; everything else takes the usual route. The apps own what they register here, so this
core module imports none of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]

_routes: dict[str, ASGIApp] = {}


def register(prefix: str, app: ASGIApp) -> None:
    if not prefix.startswith("/") or not prefix.endswith("/"):
        raise ValueError(f"a fast path prefix starts and ends with '/', not {prefix!r}")
    _routes[prefix] = app


def find(path: str) -> ASGIApp | None:
    for prefix, app in _routes.items():
        if path.startswith(prefix):
            return app
    return None
