"""A property-based fuzz test of the whole API: every operation of /api/schema/, called through
the real WSGI application with a real token, with inputs generated from the schema and beyond it
(wrong types, any JSON value as a body, odd strings and characters, far-out dates). Any 5xx
fails the test.

Each operation gets a fixed, derandomized number of examples: the run takes a minute or two
and, when it fails, fails the same way again. Half the calls name objects that exist (the
project, its staging environment, a release, a run and its item, a template, a check), so the
operations get past their 404s to the code behind them."""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode

EXAMPLES_PER_OPERATION = 10

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=10,
)


@pytest.fixture
def api_schema(transactional_db, personas):  # noqa: ANN001, ANN201
    from releasecenter.wsgi import application

    # transactional_db: the WSGI handler closes the connection after each request, as a server
    # does, which a test wrapped in one transaction would not survive.
    return schemathesis.openapi.from_wsgi("/api/schema/", application)


@pytest.fixture
def known_ids(personas) -> dict[str, dict[str, object]]:  # noqa: ANN001
    """Path parameters naming objects that exist, by the collection the path names."""
    from checklists import services as checklists
    from deployments import services as deployments
    from monitoring import services as monitoring
    from monitoring.models import EnvironmentMonitoring

    member = personas.membership(personas.member)
    template = checklists.import_runbook(
        personas.member, personas.project, "# Runbook\n\n## Steps\n\n- [ ] One\n- [ ] Two\n"
    ).template
    run = checklists.create_run(personas.member, template, environment=personas.staging)
    release = deployments.create_release(
        personas.member, member, version="1.0.0", commit_sha="abc1234"
    )
    EnvironmentMonitoring.objects.update_or_create(
        environment=personas.staging, defaults={"allow_list": "127.0.0.1"}
    )
    check = monitoring.create_check(
        personas.member,
        member,
        url="http://127.0.0.1:9/health",
        environment=personas.staging,
        name="api health",
    )
    common = {"slug": "shop", "name": "staging", "release_id": release.pk}
    return {
        "checks": {**common, "id": check.pk},
        "checklist-runs": {**common, "id": run.pk, "item_id": run.items.first().pk},
        "checklist-templates": {**common, "id": template.pk},
        "releases": {**common, "id": release.pk},
        "": common,
    }


def _existing(path: str, parameters: list[str], known: dict) -> dict[str, object]:
    collection = next((c for c in known if c and f"/{c}/" in path), "")
    values = known[collection]
    return {name: values[name] for name in parameters if name in values}


def test_no_api_operation_answers_with_a_server_error(api_schema, known_ids, personas):  # noqa: ANN001
    """Pytest's own parametrizing of schemathesis needs a pytest private that pytest 9 no longer
    has, so the operations are walked here, each with its own bounded Hypothesis run."""
    from releasecenter import services
    from releasecenter.models import ApiToken

    token: dict[str, object] = {}

    def current_token() -> str:
        # A generated DELETE /tokens/{id}/ may revoke the token in use: then make another.
        if not token or ApiToken.objects.filter(pk=token["id"], revoked_at__isnull=False).exists():
            row, raw = services.create_api_token(personas.admin, "fuzz")
            token.update(id=row.pk, raw=raw)
        return str(token["raw"])

    server_errors: dict[str, str] = {}
    operations = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        operations.append(label)
        parameters = re.findall(r"{(\w+)}", operation.path)
        existing = _existing(operation.path, parameters, known_ids) or None
        strategies = [
            operation.as_strategy(GenerationMode.POSITIVE, path_parameters=existing),
            operation.as_strategy(GenerationMode.POSITIVE),
        ]
        try:
            strategies.append(
                operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=existing)
            )
        except Exception:  # noqa: BLE001, S110 - an operation with nothing to make invalid
            pass

        @given(case=st.one_of(strategies), other_body=st.none() | JSON_VALUES)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case, other_body):  # noqa: ANN001, ANN202
            if other_body is not None and case.media_type == "application/json":
                case.body = other_body  # any JSON value at all, not only what the schema says
            response = case.call(headers={"Authorization": f"Bearer {current_token()}"})
            name = f"{case.operation.method.upper()} {case.operation.path}"
            if response.status_code >= 500 and name not in server_errors:
                server_errors[name] = (
                    f"{response.status_code} for {case.as_curl_command()}: {response.text[:300]}"
                )

        call()
    assert len(operations) >= 39, operations  # the schema lists every operation
    assert server_errors == {}
