"""ASGI entry point: uvicorn serves pages, the API and the server-sent event streams."""

import gc
import os
import sys

import django
from asgiref.sync import iscoroutinefunction, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.urls import Resolver404, get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "releasecenter.settings")


class Handler(ASGIHandler):
    """Django's ASGI handler, with sync views served the way WSGI serves them.

    Under the stock handler every request walks the middleware in async mode, and each
    middleware that is a plain MiddlewareMixin (sessions, CSRF, auth, messages, security,
    CSP ...) runs its sync hooks through ``sync_to_async``: a hop between the event loop and
    the request's thread, and a GIL hand-over, twice per middleware. For a sync view that is
    some twenty hops per request, about a third of a tick's CPU on the server, and under
    concurrent requests every hop can wait for another thread's GIL slice.

    Here only the async views (the event streams) take the async chain. Every other request
    runs the whole sync middleware chain and its view in one ``sync_to_async`` call, on the
    request's own thread (thread-sensitive, so the database connection and ``response.close``
    that returns it stay on one thread). Both chains are built from the same MIDDLEWARE."""

    def __init__(self) -> None:
        super().__init__()
        self._sync_handler = BaseHandler()
        self._sync_handler.load_middleware(is_async=False)

    async def __call__(self, scope, receive, send):  # noqa: ANN001, ANN204
        # Endpoints that apps serve before Django (releasecenter.fastpaths), e.g. pings.
        if scope["type"] == "http":
            app = fastpaths.find(scope["path"])
            if app is not None:
                return await app(scope, receive, send)
        return await super().__call__(scope, receive, send)

    async def get_response_async(self, request):  # noqa: ANN001, ANN201
        if _serves_async_view(request.path_info):
            return await super().get_response_async(request)
        return await sync_to_async(self._sync_handler.get_response, thread_sensitive=True)(request)


def _serves_async_view(path: str) -> bool:
    try:
        match = get_resolver().resolve(path)
    except Resolver404:
        return False  # the sync chain answers with the 404 (or CommonMiddleware's redirect)
    return iscoroutinefunction(match.func)


# A web process runs each request's sync work on a thread of its own, beside the event loop. A
# thread back from a database round trip waits for the GIL until the running one lets go, by
# default after up to 5 ms; a tick makes a dozen round trips, so under concurrent requests those
# waits, not the work, made its tail (bench_checklists, 20 people ticking: p95 114 ms at the
# default, 71 ms at 0.5 ms). Handing over sooner costs a little throughput when every thread is
# busy, which a web process whose requests mostly wait on the database rarely is.
def _switch_interval() -> float:
    raw = os.environ.get("WEB_GIL_SWITCH_INTERVAL", "0.0005")
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value <= 1:
        raise SystemExit(f"WEB_GIL_SWITCH_INTERVAL must be seconds in (0, 1], not {raw!r}")
    return value


sys.setswitchinterval(_switch_interval())

django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application() does

from releasecenter import fastpaths  # noqa: E402 (after setup: apps register in ready())

application = Handler()

# What the process holds once started (Django, the apps, their modules: hundreds of thousands of
# objects) lives as long as the process. Frozen, the garbage collector's full collections stop
# walking it again and again; with a thousand open event streams they came often enough to hold
# up an event's fan-out by a third of a second (bench/bench_streams.py). Workers do the same
# (releasecenter.celery.prepare_worker_process). The collector stays on for everything else.
gc.collect()
gc.freeze()
