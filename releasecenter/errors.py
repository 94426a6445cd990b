"""Error responses: the app's own pages for people, JSON for API clients, never a traceback.

Django calls the handlers below (``handler400`` … in urls.py, ``CSRF_FAILURE_VIEW``) for errors
raised anywhere, middleware and URL resolving included. They must not fail themselves: Django's
stock handlers re-run the CSRF check, which reads ``request.POST`` again, so a body Django cannot
decode (a form declaring ``charset=utf-16``) raised a second time from the 400 handler and then
from the 500 one, and the ASGI server answered with its own plain-text 500. These handlers read
nothing from the body, and fall back to a fixed page if even the template fails.

``middleware.JsonErrorsMiddleware`` makes the JSON promise whole: whatever answered an API client
with an error that is not JSON (a 405 from a page view, Django's debug page), it gets
``{"detail"}``.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)

MESSAGES = {
    400: "The request could not be read: check the address, its parameters and the body.",
    403: "You are not allowed to do this.",
    404: "Not found.",
    405: "This method is not allowed here.",
    500: "Something went wrong on our side; it has been logged. Try again in a moment.",
}
_FALLBACK = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title} · Release Center'
    '</title></head><body><main><h1>{title}</h1><p>{message}</p><p><a href="/">Your projects</a>'
    "</p></main></body></html>"
)


def wants_json(request: HttpRequest) -> bool:
    """API paths always; elsewhere a client that asks for JSON and not for HTML."""
    if request.path_info.startswith("/api/") and not request.path_info.startswith("/api/docs/"):
        return True
    accept = request.headers.get("Accept", "")
    return "json" in accept and "text/html" not in accept


def error_response(request: HttpRequest, status: int, message: str = "") -> HttpResponse:
    message = message or MESSAGES.get(status) or HTTPStatus(status).phrase
    if wants_json(request):
        return JsonResponse({"detail": message}, status=status)
    title = HTTPStatus(status).phrase
    try:
        body = render_to_string(
            f"{status}.html", {"message": message, "title": title}, request=request
        )
    except Exception:  # the error page must answer even when rendering it fails
        logger.exception("the %s page could not be rendered", status)
        body = _FALLBACK.format(title=title, message=message)
    return HttpResponse(body, status=status)


def _said(exception: BaseException | None) -> str:
    # Only messages our own code raises for people (PermissionDenied("Leads only"), Http404 of
    # our views) are shown; Django's internal wording (resolver tried-lists) is not.
    if exception is None or not exception.args or not isinstance(exception.args[0], str):
        return ""
    return exception.args[0]


def bad_request(request: HttpRequest, exception: BaseException | None = None) -> HttpResponse:
    return error_response(request, 400, _said(exception))


def permission_denied(request: HttpRequest, exception: BaseException | None = None) -> HttpResponse:
    return error_response(request, 403, _said(exception))


def page_not_found(request: HttpRequest, exception: BaseException | None = None) -> HttpResponse:
    return error_response(request, 404)


def server_error(request: HttpRequest) -> HttpResponse:
    return error_response(request, 500)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return error_response(
        request,
        403,
        "The form had expired or came from another site (CSRF check failed). Reload the page "
        "and send it again.",
    )
