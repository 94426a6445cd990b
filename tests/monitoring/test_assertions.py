"""Assertion specs: validation messages, evaluation against responses, the compact syntax."""

from __future__ import annotations

import json

import pytest

from monitoring.lib.assertions import (
    AssertionSpecError,
    Failure,
    Response,
    compile_path,
    evaluate,
    parse_assertion,
    validate_assertions,
)

HEALTHY = {"status": "ok", "database": "connected", "items": [{"name": "web"}, {"name": "db"}]}


def response(
    body: object = HEALTHY,
    status: int = 200,
    headers: dict[str, str] | None = None,
    latency_ms: float = 42.0,
    truncated: bool = False,
) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(
        status_code=status,
        headers=headers if headers is not None else {"Content-Type": "application/json"},
        body=raw,
        latency_ms=latency_ms,
        truncated=truncated,
    )


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "telepathy"}, "unknown type 'telepathy'"),
        ({"equals": 200}, "unknown type None"),
        ("status == 200", "must be an object"),
        ({"type": "status"}, "exactly one of 'equals' or 'in'"),
        ({"type": "status", "equals": 200, "in": [200]}, "exactly one of 'equals' or 'in'"),
        ({"type": "status", "equals": 1000}, "not an HTTP status code"),
        ({"type": "status", "equals": "200"}, "not an HTTP status code"),
        ({"type": "status", "in": []}, "non-empty list"),
        ({"type": "latency"}, "'max_ms' is required"),
        ({"type": "latency", "max_ms": -5}, "positive number"),
        ({"type": "latency", "max_msec": 5}, "unknown field(s) max_msec"),
        ({"type": "json", "op": "exists"}, "'path' is required"),
        ({"type": "json", "path": "$.a..b", "value": 1}, "cannot read JSON path"),
        ({"type": "json", "path": "$.a", "op": "like", "value": 1}, "'op' must be one of"),
        ({"type": "json", "path": "$.a"}, "'value' is required"),
        ({"type": "json", "path": "$.a", "op": "in", "value": "ok"}, "needs a list"),
        ({"type": "json", "path": "$.a", "op": "exists", "value": 1}, "takes no 'value'"),
        ({"type": "body_contains"}, "'value' is required"),
        ({"type": "body_contains", "value": ""}, "non-empty string"),
        ({"type": "body_matches", "pattern": "(unclosed"}, "invalid regular expression"),
        ({"type": "body_matches", "pattern": "a" * 2000}, "longer than"),
        ({"type": "header", "equals": "x"}, "'name' is required"),
        ({"type": "header", "name": "Bad Name", "equals": "x"}, "HTTP header name"),
        ({"type": "header", "name": "X", "equals": "a", "contains": "b"}, "exactly one of"),
        ({"type": "header", "name": "X", "exists": "yes"}, "true or false"),
    ],
)
def test_bad_specs_are_rejected_with_a_clear_message(spec: object, message: str) -> None:
    with pytest.raises(AssertionSpecError) as error:
        validate_assertions([{"type": "status", "equals": 200}, spec])
    assert "assertion #2" in str(error.value)
    assert message in str(error.value)


def test_assertions_must_be_a_list() -> None:
    with pytest.raises(AssertionSpecError, match="must be a list"):
        validate_assertions({"type": "status", "equals": 200})


def test_validation_normalises_defaults() -> None:
    assert validate_assertions(
        [{"type": "json", "path": "$.status", "value": "ok"}, {"type": "status", "in": (200,)}]
    ) == [
        {"type": "json", "path": "$.status", "op": "equals", "value": "ok"},
        {"type": "status", "in": [200]},
    ]


# --- JSON paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("$", ()),
        ("$.status", ("status",)),
        ("status", ("status",)),
        ("a.b", ("a", "b")),
        ("$.items[0].name", ("items", 0, "name")),
        ("items[-1].name", ("items", -1, "name")),
        ("$['odd key'].x", ("odd key", "x")),
        ('$["a.b"]', ("a.b",)),
        ("[2]", (2,)),
    ],
)
def test_compile_path(path: str, steps: tuple[object, ...]) -> None:
    assert compile_path(path) == steps


# --- evaluation ------------------------------------------------------------------------------


def test_healthy_response_meets_every_kind_of_assertion() -> None:
    assertions = [
        {"type": "status", "equals": 200},
        {"type": "status", "in": [200, 204]},
        {"type": "latency", "max_ms": 500},
        {"type": "json", "path": "$.status", "op": "equals", "value": "ok"},
        {"type": "json", "path": "database", "op": "in", "value": ["connected", "degraded"]},
        {"type": "json", "path": "$.items[1].name", "op": "not_equals", "value": "web"},
        {"type": "json", "path": "$.items[0]", "op": "exists"},
        {"type": "body_contains", "value": '"connected"'},
        {"type": "body_matches", "pattern": r'"status":\s*"ok"'},
        {"type": "header", "name": "content-type", "equals": "application/json"},
        {"type": "header", "name": "Content-Type", "contains": "json"},
        {"type": "header", "name": "X-Missing", "exists": False},
    ]
    assert evaluate(assertions, response()) == []


def test_each_unmet_assertion_is_one_failure_with_expected_and_actual() -> None:
    assertions = [
        {"type": "status", "equals": 200},
        {"type": "latency", "max_ms": 100},
        {"type": "json", "path": "$.status", "value": "ok"},
        {"type": "json", "path": "$.version", "op": "exists"},
        {"type": "body_contains", "value": "ready"},
        {"type": "header", "name": "X-Build", "equals": "42"},
    ]
    failures = evaluate(assertions, response({"status": "degraded"}, status=503, latency_ms=250.04))
    assert [(f.expected, f.actual) for f in failures] == [
        (200, 503),
        (100, 250.0),
        ("ok", "degraded"),
        ("present", None),
        ("ready", None),
        ("42", None),
    ]
    assert failures[0] == Failure(assertions[0], 200, 503, "status 503, expected 200")
    assert failures[2].message == "$.status is 'degraded', expected 'ok'"
    assert failures[1].message == "took 250.0 ms, limit 100 ms"


def test_status_in_failure_lists_the_accepted_codes() -> None:
    [failure] = evaluate([{"type": "status", "in": [200, 204]}], response(status=401))
    assert failure.message == "status 401, expected one of 200, 204"


def test_json_equality_does_not_confuse_true_and_one() -> None:
    doc = {"ready": True, "count": 1}
    assert evaluate([{"type": "json", "path": "$.ready", "value": True}], response(doc)) == []
    assert evaluate([{"type": "json", "path": "$.ready", "value": 1}], response(doc)) != []
    assert evaluate([{"type": "json", "path": "$.count", "value": True}], response(doc)) != []
    assert evaluate([{"type": "json", "path": "$.count", "value": 1.0}], response(doc)) == []


def test_missing_path_fails_every_op() -> None:
    for op, value in [("equals", 1), ("not_equals", 1), ("in", [1]), ("exists", None)]:
        spec = {"type": "json", "path": "$.nope[3]", "op": op}
        if op != "exists":
            spec["value"] = value
        [failure] = evaluate([spec], response())
        assert "missing" in failure.message


def test_null_value_exists() -> None:
    doc = {"maintenance": None}
    assert (
        evaluate([{"type": "json", "path": "$.maintenance", "op": "exists"}], response(doc)) == []
    )
    assert evaluate([{"type": "json", "path": "$.maintenance", "value": None}], response(doc)) == []


def test_body_that_is_not_json_fails_json_assertions_only() -> None:
    failures = evaluate(
        [
            {"type": "json", "path": "$.status", "value": "ok"},
            {"type": "body_contains", "value": "<html>"},
        ],
        response(b"<html>oops</html>"),
    )
    assert len(failures) == 1
    assert "not JSON" in failures[0].message


def test_truncated_body_is_not_parsed_as_json() -> None:
    [failure] = evaluate(
        [{"type": "json", "path": "$.status", "value": "ok"}], response(truncated=True)
    )
    assert "size limit" in failure.message


def test_body_matches_uses_search_semantics_and_reports_the_pattern() -> None:
    body = b"line one\nbuild 2024.1 ready\n"
    assert evaluate([{"type": "body_matches", "pattern": r"build \d+\.\d+"}], response(body)) == []
    [failure] = evaluate([{"type": "body_matches", "pattern": r"^ready"}], response(body))
    assert failure.message == "body does not match /^ready/"


def test_header_lookup_is_case_insensitive_and_reports_actual_value() -> None:
    headers = {"x-service": "release-center"}
    ok = [{"type": "header", "name": "X-Service", "equals": "release-center"}]
    assert evaluate(ok, response(headers=headers)) == []
    [failure] = evaluate(
        [{"type": "header", "name": "X-Service", "equals": "billing"}], response(headers=headers)
    )
    assert failure.actual == "release-center"
    [failure] = evaluate(
        [{"type": "header", "name": "X-Service", "exists": False}], response(headers=headers)
    )
    assert failure.message == "header X-Service is present"


def test_evaluate_rejects_invalid_specs() -> None:
    with pytest.raises(AssertionSpecError):
        evaluate([{"type": "status"}], response())


# --- compact syntax --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("status == 200", {"type": "status", "equals": 200}),
        ("status in [200, 204]", {"type": "status", "in": [200, 204]}),
        ("latency < 500", {"type": "latency", "max_ms": 500}),
        ("latency <= 250.5ms", {"type": "latency", "max_ms": 250.5}),
        ('$.status == "ok"', {"type": "json", "path": "$.status", "op": "equals", "value": "ok"}),
        (
            "$.items[0].name != null",
            {"type": "json", "path": "$.items[0].name", "op": "not_equals", "value": None},
        ),
        (
            'database in ["connected", "degraded"]',
            {
                "type": "json",
                "path": "database",
                "op": "in",
                "value": ["connected", "degraded"],
            },
        ),
        ("status.code == 1", {"type": "json", "path": "status.code", "op": "equals", "value": 1}),
        ("$.database exists", {"type": "json", "path": "$.database", "op": "exists"}),
        ('body contains "ready"', {"type": "body_contains", "value": "ready"}),
        ('body matches "^OK\\\\b"', {"type": "body_matches", "pattern": "^OK\\b"}),
        (
            'header Content-Type == "application/json"',
            {"type": "header", "name": "Content-Type", "equals": "application/json"},
        ),
        (
            'header Content-Type contains "json"',
            {"type": "header", "name": "Content-Type", "contains": "json"},
        ),
    ],
)
def test_parse_assertion(text: str, spec: dict[str, object]) -> None:
    assert parse_assertion(text) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("$.status == ok", "not a JSON value"),
        ("status == 2000", "not an HTTP status code"),
        ("latency > 5", "cannot read assertion"),
        ('body matches "("', "invalid regular expression"),
        ("", "cannot read assertion"),
    ],
)
def test_parse_assertion_errors(text: str, message: str) -> None:
    with pytest.raises(AssertionSpecError, match=message.replace("(", r"\(")):
        parse_assertion(text)
