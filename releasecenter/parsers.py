"""The API's JSON parser: every JSON endpoint refuses, with a 400 naming the problem, what would
otherwise fail further down with a 500 (see releasecenter.validation)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.utils import json

from .validation import MAX_JSON_DEPTH, find_nul, json_depth_exceeds


class JSONParser(parsers.JSONParser):
    """JSON objects only (every endpoint takes named fields), at most MAX_JSON_DEPTH deep, and no
    NUL characters (PostgreSQL cannot store them in text)."""

    def parse(self, stream, media_type=None, parser_context=None) -> dict[str, Any]:  # noqa: ANN001
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"The body could not be read as {encoding} text: {exc}") from None
        # The standard parser recurses once per level: 100,000 "[" end in RecursionError.
        if json_depth_exceeds(text):
            raise ParseError(f"The JSON is nested more than {MAX_JSON_DEPTH} levels deep.")
        try:
            data = json.loads(text, parse_constant=json.strict_constant if self.strict else None)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        if not isinstance(data, dict):
            raise ParseError('Send a JSON object as the body: {"field": value, ...}.')
        where = find_nul(data)
        if where:
            # Keyed by the field, as the serializers' own errors are, so a client finds it.
            raise ValidationError({where: [f"{where}: a NUL character (\\u0000) is not allowed."]})
        return data
