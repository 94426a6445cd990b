"""Middleware of our own. Each works in both modes so an async view (the event stream) runs on the
event loop under uvicorn instead of being pushed through a thread by a sync-only link."""

import re
import uuid

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.exceptions import BadRequest, ObjectDoesNotExist
from django.http import JsonResponse
from django.http.multipartparser import MultiPartParserError
from whitenoise.middleware import WhiteNoiseMiddleware

from .errors import MESSAGES, error_response, wants_json
from .request_context import current_request_id

_safe_id = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class _BothModes:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):  # noqa: ANN001
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request):  # noqa: ANN001, ANN204
        if self.async_mode:
            return self.__acall__(request)
        return self.handle(request)

    def handle(self, request):  # noqa: ANN001, ANN201
        raise NotImplementedError

    async def __acall__(self, request):  # noqa: ANN001, ANN204
        raise NotImplementedError


class RequestIdMiddleware(_BothModes):
    """Tags each request with an id (the caller's X-Request-ID when sane) for logs and audit rows."""

    def _start(self, request):  # noqa: ANN001, ANN202
        incoming = request.headers.get("X-Request-ID", "")
        request.request_id = incoming if _safe_id.match(incoming) else uuid.uuid4().hex
        return current_request_id.set(request.request_id)

    def handle(self, request):  # noqa: ANN001, ANN201
        token = self._start(request)
        try:
            response = self.get_response(request)
        finally:
            current_request_id.reset(token)
        response["X-Request-ID"] = request.request_id
        return response

    async def __acall__(self, request):  # noqa: ANN001, ANN204
        token = self._start(request)
        try:
            response = await self.get_response(request)
        finally:
            current_request_id.reset(token)
        response["X-Request-ID"] = request.request_id
        return response


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, made async-capable: a static file is served from a thread, anything else passes
    straight through on the event loop."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None):  # noqa: ANN001
        super().__init__(get_response)
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def _lookup(self, request):  # noqa: ANN001, ANN202
        if self.autorefresh:
            return self.find_file(request.path_info)
        return self.files.get(request.path_info)

    def __call__(self, request):  # noqa: ANN001, ANN204
        if self.async_mode:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request):  # noqa: ANN001, ANN204
        static_file = self._lookup(request)
        if static_file is not None:
            return await sync_to_async(self.serve, thread_sensitive=False)(static_file, request)
        return await self.get_response(request)


class JsonErrorsMiddleware(_BothModes):
    """An API client gets JSON for every error, whichever layer answered."""

    def _fix(self, request, response):  # noqa: ANN001, ANN202
        if response.status_code < 400 or not wants_json(request):
            return response
        if "json" in response.get("Content-Type", ""):
            return response
        fixed = JsonResponse(
            {"detail": MESSAGES.get(response.status_code) or response.reason_phrase},
            status=response.status_code,
        )
        for header in ("Allow", "Retry-After", "WWW-Authenticate", "X-Request-ID"):
            if header in response:
                fixed[header] = response[header]
        return fixed

    def handle(self, request):  # noqa: ANN001, ANN201
        return self._fix(request, self.get_response(request))

    async def __acall__(self, request):  # noqa: ANN001, ANN204
        return self._fix(request, await self.get_response(request))


class BadInputMiddleware(_BothModes):
    """One gate for input no view can use: a 400 naming the problem instead of a 500 further down.

    A NUL character in the path, a query parameter or a form field (PostgreSQL refuses to store
    or even compare one in text), and a form body Django cannot decode. JSON bodies are checked
    by the API's parser (parsers.JSONParser). A row that disappears between a view's access
    check and its write (a check deleted while being edited) is a 404, not a 500."""

    def _refusal(self, request):  # noqa: ANN001, ANN202
        if "\x00" in request.path_info:
            return error_response(request, 400, "The address contains a NUL character (%00).")
        for key, values in request.GET.lists():
            if "\x00" in key or any("\x00" in value for value in values):
                return error_response(
                    request, 400, f"The query parameter {key!r} contains a NUL character (%00)."
                )
        if request.method == "POST" and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            try:
                fields = request.POST
            except (BadRequest, MultiPartParserError, UnicodeDecodeError, LookupError) as exc:
                return error_response(request, 400, f"The form could not be read: {exc}")
            for key, values in fields.lists():
                if "\x00" in key or any("\x00" in value for value in values):
                    return error_response(
                        request, 400, f"The field {key!r} contains a NUL character."
                    )
        return None

    def handle(self, request):  # noqa: ANN001, ANN201
        return self._refusal(request) or self.get_response(request)

    async def __acall__(self, request):  # noqa: ANN001, ANN204
        return self._refusal(request) or await self.get_response(request)

    def process_exception(self, request, exception):  # noqa: ANN001, ANN201
        if isinstance(exception, ObjectDoesNotExist):
            return error_response(request, 404)
        return None
