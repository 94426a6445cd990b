"""Health-check assertions: what a response must look like for a check to pass.

An assertion is a small JSON-serialisable dict, stored with the check:

    {"type": "status", "in": [200, 204]}            {"type": "status", "equals": 200}
    {"type": "latency", "max_ms": 500}
    {"type": "json", "path": "$.status", "op": "equals", "value": "ok"}
        op: equals | not_equals | in | exists  (paths: "$.a.b", "$.items[0].name", "a.b")
    {"type": "body_contains", "value": "ready"}
    {"type": "body_matches", "pattern": "^OK"}
    {"type": "header", "name": "Content-Type", "equals": "application/json"}
        or "contains": "json", or "exists": true
    {"type": "certificate_days_left", "at_least": 14}     (HTTPS: the served certificate)
    {"type": "tls_version", "at_least": "1.2"}            (HTTPS: the negotiated version)
    {"type": "http_version", "equals": "1.1"}             (or "at_least")

`validate_assertions` checks specs when a check is saved; `evaluate` runs them against a response
and returns one `Failure` per unmet assertion. `parse_assertion` turns the compact form people
type ('$.status == "ok"', 'status in [200, 204]', 'latency < 500') into a dict.

To add a type: write `_validate_<type>` (normalise and raise AssertionSpecError) and
`_check_<type>` (return None or a Failure), then register both in `_TYPES`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

# Regexes run on bodies of up to the engine's body cap; a bound on the pattern keeps a typo from
# becoming an expensive expression. It is not a ReDoS defence, only a sanity limit.
MAX_PATTERN_LENGTH = 1000
MAX_PATH_LENGTH = 500


class AssertionSpecError(ValueError):
    """An assertion dict that cannot be evaluated; the message says which one and why."""


class ResponseLike(Protocol):
    status_code: int
    headers: Mapping[str, str]
    body: bytes
    latency_ms: float


@dataclass(frozen=True)
class TLSInfo:
    """The certificate a server presented and the TLS version negotiated with it."""

    not_after: datetime
    issuer: str
    names: tuple[str, ...]
    version: str  # as ssl reports it: "TLSv1.3"

    def days_left(self, now: datetime | None = None) -> float:
        return (self.not_after - (now or datetime.now(UTC))).total_seconds() / 86400

    def to_dict(self) -> dict[str, Any]:
        return {
            "not_after": self.not_after.isoformat(),
            "issuer": self.issuer,
            "names": list(self.names),
            "version": self.version,
        }


@dataclass
class Response:
    """What assertions see of a response. The engine builds one per check."""

    status_code: int
    headers: Mapping[str, str]
    body: bytes
    latency_ms: float
    truncated: bool = False
    tls: TLSInfo | None = None
    http_version: str | None = None
    _json: Any = field(default=None, repr=False)
    _json_error: str | None = field(default=None, repr=False)
    _json_done: bool = field(default=False, repr=False)

    def json(self) -> tuple[Any, str | None]:
        """Parse the body once per response, however many JSON assertions there are."""
        if not self._json_done:
            self._json_done = True
            if self.truncated:
                self._json_error = "body exceeded the size limit and was cut"
            else:
                try:
                    self._json = json.loads(self.body)
                except (ValueError, UnicodeDecodeError) as exc:
                    self._json_error = f"body is not JSON ({exc})"
        return self._json, self._json_error


@dataclass(frozen=True)
class Failure:
    assertion: Mapping[str, Any]
    expected: Any
    actual: Any
    message: str


# --- JSON paths --------------------------------------------------------------------------------

_MISSING = object()
_SEGMENT = re.compile(
    r"""\.(?P<name>[^.\[\]]+)             # .name
      | \[(?P<index>-?\d+)\]              # [0] or [-1]
      | \[(?P<quote>['"])(?P<key>.*?)(?P=quote)\]   # ['key with spaces']
    """,
    re.VERBOSE,
)


@lru_cache(maxsize=1024)
def compile_path(path: str) -> tuple[str | int, ...]:
    """Turn "$.items[0].name" (or "items[0].name") into ("items", 0, "name")."""
    text = path.strip()
    if text.startswith("$"):
        text = text[1:]
    elif text:
        text = "." + text if not text.startswith("[") else text
    steps: list[str | int] = []
    position = 0
    while position < len(text):
        match = _SEGMENT.match(text, position)
        if match is None:
            raise AssertionSpecError(f"cannot read JSON path {path!r} at {text[position:]!r}")
        if match["name"] is not None:
            steps.append(match["name"])
        elif match["index"] is not None:
            steps.append(int(match["index"]))
        else:
            steps.append(match["key"])
        position = match.end()
    return tuple(steps)


def resolve_path(document: Any, steps: Iterable[str | int]) -> Any:
    """Follow steps into a parsed JSON document; return _MISSING when a step does not exist."""
    current = document
    for step in steps:
        if isinstance(step, int):
            if not isinstance(current, list) or not -len(current) <= step < len(current):
                return _MISSING
            current = current[step]
        elif isinstance(current, dict) and step in current:
            current = current[step]
        else:
            return _MISSING
    return current


def _json_equal(left: Any, right: Any) -> bool:
    # Python says True == 1; JSON does not, and a health endpoint answering true where 1 was
    # expected is a real difference.
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    return bool(left == right)


# --- validation --------------------------------------------------------------------------------


def _require(spec: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in spec:
        raise AssertionSpecError(f"{where}: {key!r} is required")
    return spec[key]


def _only(spec: Mapping[str, Any], allowed: set[str], where: str) -> None:
    # Unknown keys are usually typos ("max_msec") that would otherwise pass silently.
    extra = set(spec) - allowed - {"type"}
    if extra:
        raise AssertionSpecError(f"{where}: unknown field(s) {', '.join(sorted(extra))}")


def _status_code(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise AssertionSpecError(f"{where}: {value!r} is not an HTTP status code")
    return value


def _validate_status(spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    _only(spec, {"equals", "in"}, where)
    if ("equals" in spec) == ("in" in spec):
        raise AssertionSpecError(f"{where}: give exactly one of 'equals' or 'in'")
    if "equals" in spec:
        return {"type": "status", "equals": _status_code(spec["equals"], where)}
    codes = spec["in"]
    if not isinstance(codes, list | tuple) or not codes:
        raise AssertionSpecError(f"{where}: 'in' must be a non-empty list of status codes")
    return {"type": "status", "in": [_status_code(c, where) for c in codes]}


def _validate_latency(spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    _only(spec, {"max_ms"}, where)
    limit = _require(spec, "max_ms", where)
    if isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0:
        raise AssertionSpecError(f"{where}: 'max_ms' must be a positive number")
    return {"type": "latency", "max_ms": limit}


_JSON_OPS = {"equals", "not_equals", "in", "exists"}


def _validate_json(spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    _only(spec, {"path", "op", "value"}, where)
    path = _require(spec, "path", where)
    if not isinstance(path, str) or not path.strip() or len(path) > MAX_PATH_LENGTH:
        raise AssertionSpecError(f"{where}: 'path' must be a JSON path such as '$.status'")
    try:
        compile_path(path)
    except AssertionSpecError as exc:
        raise AssertionSpecError(f"{where}: {exc}") from None
    op = spec.get("op", "equals")
    if op not in _JSON_OPS:
        raise AssertionSpecError(f"{where}: 'op' must be one of {', '.join(sorted(_JSON_OPS))}")
    normalised: dict[str, Any] = {"type": "json", "path": path, "op": op}
    if op == "exists":
        if "value" in spec:
            raise AssertionSpecError(f"{where}: 'exists' takes no 'value'")
        return normalised
    value = _require(spec, "value", where)
    if op == "in" and not isinstance(value, list | tuple):
        raise AssertionSpecError(f"{where}: 'in' needs a list as 'value'")
    normalised["value"] = list(value) if op == "in" else value
    return normalised


def _validate_body_contains(spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    _only(spec, {"value"}, where)
    value = _require(spec, "value", where)
    if not isinstance(value, str) or value == "":
        raise AssertionSpecError(f"{where}: 'value' must be a non-empty string")
    return {"type": "body_contains", "value": value}


def _validate_body_matches(spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    _only(spec, {"pattern"}, where)
    pattern = _require(spec, "pattern", where)
    if not isinstance(pattern, str) or pattern == "":
        raise AssertionSpecError(f"{where}: 'pattern' must be a non-empty string")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise AssertionSpecError(f"{where}: 'pattern' is longer than {MAX_PATTERN_LENGTH}")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise AssertionSpecError(f"{where}: invalid regular expression: {exc}") from None
    return {"type": "body_matches", "pattern": pattern}


def _validate_header(spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    _only(spec, {"name", "equals", "contains", "exists"}, where)
    name = _require(spec, "name", where)
    if not isinstance(name, str) or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
        raise AssertionSpecError(f"{where}: 'name' must be an HTTP header name")
    given = [key for key in ("equals", "contains", "exists") if key in spec]
    if len(given) != 1:
        raise AssertionSpecError(f"{where}: give exactly one of 'equals', 'contains', 'exists'")
    key = given[0]
    value = spec[key]
    if key == "exists" and not isinstance(value, bool):
        raise AssertionSpecError(f"{where}: 'exists' must be true or false")
    if key != "exists" and not isinstance(value, str):
        raise AssertionSpecError(f"{where}: {key!r} must be a string")
    return {"type": "header", "name": name, key: value}


# --- evaluation --------------------------------------------------------------------------------


def _check_status(spec: dict[str, Any], response: ResponseLike) -> Failure | None:
    actual = response.status_code
    if "equals" in spec:
        if actual == spec["equals"]:
            return None
        return Failure(spec, spec["equals"], actual, f"status {actual}, expected {spec['equals']}")
    if actual in spec["in"]:
        return None
    expected = ", ".join(str(c) for c in spec["in"])
    return Failure(spec, spec["in"], actual, f"status {actual}, expected one of {expected}")


def _check_latency(spec: dict[str, Any], response: ResponseLike) -> Failure | None:
    actual = round(response.latency_ms, 1)
    if response.latency_ms <= spec["max_ms"]:
        return None
    return Failure(spec, spec["max_ms"], actual, f"took {actual} ms, limit {spec['max_ms']} ms")


def _document(response: ResponseLike) -> tuple[Any, str | None]:
    if isinstance(response, Response):
        return response.json()
    try:
        return json.loads(response.body), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"body is not JSON ({exc})"


def _check_json(spec: dict[str, Any], response: ResponseLike) -> Failure | None:
    path, op = spec["path"], spec["op"]
    document, error = _document(response)
    expected = spec.get("value", "present") if op != "exists" else "present"
    if error is not None:
        return Failure(spec, expected, None, f"{path}: {error}")
    actual = resolve_path(document, compile_path(path))
    if actual is _MISSING:
        if op == "exists":
            return Failure(spec, "present", None, f"{path} is missing")
        return Failure(spec, expected, None, f"{path} is missing, expected {op} {expected!r}")
    if op == "exists":
        return None
    value = spec["value"]
    if op == "equals" and not _json_equal(actual, value):
        return Failure(spec, value, actual, f"{path} is {actual!r}, expected {value!r}")
    if op == "not_equals" and _json_equal(actual, value):
        return Failure(spec, value, actual, f"{path} is {actual!r}, expected anything else")
    if op == "in" and not any(_json_equal(actual, v) for v in value):
        return Failure(spec, value, actual, f"{path} is {actual!r}, expected one of {value!r}")
    return None


def _text(response: ResponseLike) -> str:
    return response.body.decode("utf-8", errors="replace")


def _check_body_contains(spec: dict[str, Any], response: ResponseLike) -> Failure | None:
    if spec["value"] in _text(response):
        return None
    return Failure(spec, spec["value"], None, f"body does not contain {spec['value']!r}")


def _check_body_matches(spec: dict[str, Any], response: ResponseLike) -> Failure | None:
    if re.search(spec["pattern"], _text(response)):
        return None
    return Failure(spec, spec["pattern"], None, f"body does not match /{spec['pattern']}/")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Header names are case-insensitive; a plain dict of headers is not.
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _check_header(spec: dict[str, Any], response: ResponseLike) -> Failure | None:
    name = spec["name"]
    actual = _header(response.headers, name)
    if "exists" in spec:
        if (actual is not None) == spec["exists"]:
            return None
        state = "missing" if actual is None else "present"
        return Failure(spec, spec["exists"], actual, f"header {name} is {state}")
    if actual is None:
        return Failure(spec, spec.get("equals", spec.get("contains")), None, f"no {name} header")
    if "equals" in spec and actual != spec["equals"]:
        return Failure(
            spec, spec["equals"], actual, f"{name} is {actual!r}, expected {spec['equals']!r}"
        )
    if "contains" in spec and spec["contains"] not in actual:
        return Failure(
            spec,
            spec["contains"],
            actual,
            f"{name} is {actual!r}, expected it to contain {spec['contains']!r}",
        )
    return None


_TLS_VERSIONS = {"1.0": (1, 0), "1.1": (1, 1), "1.2": (1, 2), "1.3": (1, 3)}


def _validate_certificate_days_left(spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    _only(spec, {"at_least"}, where)
    days = _require(spec, "at_least", where)
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0 <= days <= 3650:
        raise AssertionSpecError(f"{where}: 'at_least' must be a number of days, 0 to 3650")
    return {"type": "certificate_days_left", "at_least": days}


def _version_text(value: Any, known: Mapping[str, tuple[int, int]], where: str) -> str:
    text = str(value).strip() if isinstance(value, str | int | float) else ""
    if isinstance(value, bool) or text not in known:
        raise AssertionSpecError(f"{where}: use one of {', '.join(known)}, not {value!r}")
    return text


def _validate_tls_version(spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    _only(spec, {"at_least"}, where)
    version = _version_text(_require(spec, "at_least", where), _TLS_VERSIONS, where)
    return {"type": "tls_version", "at_least": version}


_HTTP_VERSIONS = {"1.0": (1, 0), "1.1": (1, 1), "2": (2, 0), "3": (3, 0)}


def _validate_http_version(spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    _only(spec, {"equals", "at_least"}, where)
    if ("equals" in spec) == ("at_least" in spec):
        raise AssertionSpecError(f"{where}: give exactly one of 'equals' or 'at_least'")
    key = "equals" if "equals" in spec else "at_least"
    return {"type": "http_version", key: _version_text(spec[key], _HTTP_VERSIONS, where)}


def _tls(response: ResponseLike) -> TLSInfo | None:
    return getattr(response, "tls", None)


def _check_certificate_days_left(spec: dict[str, Any], response: ResponseLike) -> Failure | None:
    tls = _tls(response)
    if tls is None:
        return Failure(spec, spec["at_least"], None, "no TLS certificate (not an HTTPS answer)")
    days = tls.days_left()
    if days >= spec["at_least"]:
        return None
    when = tls.not_after.strftime("%Y-%m-%d %H:%M UTC")
    left = "expired" if days < 0 else f"{days:.1f} days left"
    return Failure(
        spec,
        spec["at_least"],
        round(days, 1),
        f"certificate for {', '.join(tls.names[:3]) or 'the server'} expires {when} "
        f"({left}), expected at least {spec['at_least']} days",
    )


def _check_tls_version(spec: dict[str, Any], response: ResponseLike) -> Failure | None:
    tls = _tls(response)
    if tls is None:
        return Failure(spec, spec["at_least"], None, "no TLS (not an HTTPS answer)")
    actual = tls.version.removeprefix("TLSv")
    if _TLS_VERSIONS.get(actual, (0, 0)) >= _TLS_VERSIONS[spec["at_least"]]:
        return None
    return Failure(
        spec,
        spec["at_least"],
        tls.version,
        f"{tls.version} negotiated, expected TLS {spec['at_least']} or later",
    )


def _check_http_version(spec: dict[str, Any], response: ResponseLike) -> Failure | None:
    actual = getattr(response, "http_version", None) or ""
    have = _HTTP_VERSIONS.get(
        actual.removesuffix(".0") if actual.startswith(("2", "3")) else actual
    )
    if "equals" in spec:
        if have == _HTTP_VERSIONS[spec["equals"]]:
            return None
        return Failure(
            spec, spec["equals"], actual, f"HTTP/{actual}, expected HTTP/{spec['equals']}"
        )
    if have is not None and have >= _HTTP_VERSIONS[spec["at_least"]]:
        return None
    return Failure(
        spec, spec["at_least"], actual, f"HTTP/{actual}, expected HTTP/{spec['at_least']} or later"
    )


_Validator = Callable[[Mapping[str, Any], str], dict[str, Any]]
_Checker = Callable[[dict[str, Any], ResponseLike], Failure | None]

_TYPES: dict[str, tuple[_Validator, _Checker]] = {
    "status": (_validate_status, _check_status),
    "latency": (_validate_latency, _check_latency),
    "json": (_validate_json, _check_json),
    "body_contains": (_validate_body_contains, _check_body_contains),
    "body_matches": (_validate_body_matches, _check_body_matches),
    "header": (_validate_header, _check_header),
    "certificate_days_left": (_validate_certificate_days_left, _check_certificate_days_left),
    "tls_version": (_validate_tls_version, _check_tls_version),
    "http_version": (_validate_http_version, _check_http_version),
}


def _validate_one(spec: Any, index: int) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise AssertionSpecError(f"assertion #{index + 1}: must be an object, got {spec!r}")
    kind = spec.get("type")
    where = f"assertion #{index + 1} ({kind})"
    if kind not in _TYPES:
        known = ", ".join(sorted(_TYPES))
        raise AssertionSpecError(f"assertion #{index + 1}: unknown type {kind!r} (use {known})")
    return _TYPES[kind][0](spec, where)


def validate_assertions(assertions: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return normalised copies of the assertions, or raise AssertionSpecError on the first bad
    one."""
    if isinstance(assertions, str | bytes | Mapping):
        raise AssertionSpecError("assertions must be a list")
    return [_validate_one(spec, index) for index, spec in enumerate(assertions)]


def evaluate(
    assertions: Iterable[Mapping[str, Any]], response: ResponseLike, *, validated: bool = False
) -> list[Failure]:
    """Check a response against assertions; an empty list means every assertion held.

    Pass validated=True with the output of validate_assertions to skip validating again.
    """
    failures = []
    specs = assertions if validated else validate_assertions(assertions)
    for spec in specs:
        failure = _TYPES[spec["type"]][1](spec, response)
        if failure is not None:
            failures.append(failure)
    return failures


# --- compact syntax ----------------------------------------------------------------------------

_COMPACT = re.compile(
    r"""^\s*(?:
        (?P<status>status)\s*(?P<status_op>==|in)\s*(?P<status_value>.+)
      | (?P<latency>latency)\s*(?:<|<=)\s*(?P<latency_value>\d+(?:\.\d+)?)\s*(?:ms)?
      | body\s+contains\s+(?P<contains>.+)
      | body\s+matches\s+(?P<matches>.+)
      | header\s+(?P<header>[!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*(?P<header_op>==|contains)\s*(?P<header_value>.+)
      | (?P<path>\$\S*|[A-Za-z_][\w.\[\]'"-]*)\s+exists
      | (?P<jpath>\$\S*|[A-Za-z_][\w.\[\]'"-]*)\s*(?P<json_op>==|!=|\bin\b)\s*(?P<json_value>.+)
    )\s*$""",
    re.VERBOSE,
)


def _literal(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise AssertionSpecError(
            f'{source!r}: {text.strip()!r} is not a JSON value (quote strings with ")'
        ) from None


def parse_assertion(text: str) -> dict[str, Any]:
    """Parse the compact form into a validated assertion dict.

    'status == 200', 'status in [200, 204]', 'latency < 500' (a limit: at most 500 ms),
    '$.status == "ok"', '$.version != "0"', '$.mode in ["a", "b"]', '$.db exists',
    'body contains "ready"', 'body matches "^OK"', 'header Content-Type == "text/plain"'.
    Values are JSON, so strings are double-quoted.
    """
    match = _COMPACT.match(text)
    if match is None:
        raise AssertionSpecError(f"cannot read assertion {text!r}")
    spec: dict[str, Any]
    if match["status"]:
        key = "equals" if match["status_op"] == "==" else "in"
        spec = {"type": "status", key: _literal(match["status_value"], text)}
    elif match["latency"]:
        limit = float(match["latency_value"])
        spec = {"type": "latency", "max_ms": int(limit) if limit.is_integer() else limit}
    elif match["contains"] is not None:
        spec = {"type": "body_contains", "value": _literal(match["contains"], text)}
    elif match["matches"] is not None:
        spec = {"type": "body_matches", "pattern": _literal(match["matches"], text)}
    elif match["header"]:
        key = "equals" if match["header_op"] == "==" else "contains"
        spec = {
            "type": "header",
            "name": match["header"],
            key: _literal(match["header_value"], text),
        }
    elif match["path"]:
        spec = {"type": "json", "path": match["path"], "op": "exists"}
    else:
        op = {"==": "equals", "!=": "not_equals", "in": "in"}[match["json_op"]]
        spec = {
            "type": "json",
            "path": match["jpath"],
            "op": op,
            "value": _literal(match["json_value"], text),
        }
    return _validate_one(spec, 0)
