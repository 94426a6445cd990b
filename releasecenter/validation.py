"""Checks every piece of outside input goes through, whichever view or endpoint it arrives at.

Bad input is a 400 with a message naming the field, never a 500 further down: a NUL character
that PostgreSQL refuses to store, a digit that ``str.isdigit()`` accepts and ``int()`` does not,
a date so far out that formatting it in another time zone overflows, JSON nested past what the
parser can recurse into.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

# Wide enough for any release, run or window anyone plans; narrow enough that a moment converts to
# every time zone and back without leaving what datetime can hold (years 1 to 9999).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 12, 31, 23, 59, 59, tzinfo=UTC)

# A body deeper than this is refused before it is parsed (json's parser recurses per level).
MAX_JSON_DEPTH = 64


def ascii_int(text: str | None) -> int | None:
    """The integer written in ASCII digits, else None.

    ``str.isdigit()`` is true for "²" (which ``int()`` refuses) and for "٣" (which it reads as
    3): a guard made of it lets odd input through to ``int()`` or to the database."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def validate_moment(value: datetime | None) -> None:
    """A date and time people may plan with: from 2000 to 2100."""
    if value is None:
        return
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if not EARLIEST <= value <= LATEST:
        raise ValidationError(
            "Choose a date between %(earliest)s and %(latest)s.",
            code="out_of_range",
            params={"earliest": EARLIEST.year, "latest": LATEST.year},
        )


class MomentFormField(forms.DateTimeField):
    """A form's date and time, within the range of validate_moment."""

    default_validators = [validate_moment]


def find_nul(value: object, path: str = "") -> str | None:
    """The path ("items[2].name") of the first string holding a NUL character, or None."""
    if isinstance(value, str):
        return path or "body" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in str(key):
                return f"{path}.{key!r}" if path else repr(key)
            found = find_nul(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = find_nul(item, f"{path}[{index}]")
            if found:
                return found
    return None


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests arrays and objects deeper than `limit`, without parsing it.

    Brackets inside strings do not count; a malformed text is left to the parser to refuse."""
    depth = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        if bracket.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def load_json(text: str) -> Any:
    """``json.loads`` for JSON typed into a form: a ValueError (which callers already turn into
    a form error) for nesting past MAX_JSON_DEPTH or a NUL character, as for a parse error."""
    if json_depth_exceeds(text):
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    value = json.loads(text)
    where = find_nul(value)
    if where:
        raise ValueError(f"{where}: a NUL character (\\u0000) is not allowed")
    return value
