"""The verbs of monitoring: define checks and suites, run them, record what happened.

Views, the API, tasks, the deployment runner and checklist automation all call these. Writes
validate first (a ValidationError names the field and, for a refused URL, the guard's rule), then
mutate in a transaction, then publish an event.

Running is split in three so that each part stays small and testable:

* ``_plan``: load what a run needs from the database (URLs, decrypted headers, the address
  policy of each environment) into plain ``CheckSpec``s;
* ``_execute``: the async part, no database: every check of a run goes through one
  ``monitoring.lib.engine.CheckRunner`` (a pooled, guarded client per address policy, and one
  per-host and one global limit for the whole run); suites run their steps in order through
  the same runner, so they share those limits with the plain checks;
* ``_record``: one transaction that stores every result, adds them to the hourly and daily
  rollups and moves each check's state. A change between passing and failing writes one event
  (on the project's topic, mirrored on the check's) and one ``Notification`` row; the
  notification is delivered by a task after commit (see ``notify``).

For the deployment runner: ``run_suite_for_environment(environment, ...)`` runs an environment's
smoke suites (and, by default, its checks) and says whether they all passed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Sum
from django.utils import timezone

from releasecenter import events
from releasecenter.access import require_role
from releasecenter.crypto import DecryptionError
from releasecenter.models import Environment, Membership, Project, Service
from releasecenter.services import Conflict
from releasecenter.validation import ascii_int

from . import heartbeats, probes
from .lib.assertions import (
    AssertionSpecError,
    Failure,
    TLSInfo,
    parse_assertion,
    validate_assertions,
)
from .lib.engine import (
    MAX_CONNECTIONS,
    PER_HOST_LIMIT,
    CheckRunner,
    CheckSpec,
    ClientCertificate,
    SocketFactory,
)
from .lib.engine import CheckResult as EngineResult
from .lib.ssrf import AddressPolicy, Decision, is_valid_entry
from .models import (
    MAX_TIMEOUT_SECONDS,
    METHODS,
    ROLLUP_RETENTION_DAYS,
    Check,
    CheckResult,
    CheckRollup,
    EnvironmentMonitoring,
    Notification,
    PerformanceTarget,
    result_retention_days,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

# How many due checks one dispatch claims, and how many one task runs together.
DISPATCH_LIMIT = 2000
RUN_BATCH = 200
MAX_HEADERS = 30
MAX_BODY_CHARS = 64 * 1024
MAX_ASSERTIONS = 50
MAX_STEPS = 50
# A suite stops starting steps after this long (each step is bounded by its own timeout), so a
# suite run from the API, a checklist item or a deployment cannot hold its caller for an hour.
SUITE_DEADLINE_SECONDS = 300.0
EXCERPT_CHARS = 2048
_BLOCKED = re.compile(r"^blocked by address policy \((?P<rule>[a-z-]+)\)")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


# --- The address policy ----------------------------------------------------------------------


# The whole of 127.0.0.0/8 and ::1 reach this host, so a store listening on "localhost" (or
# on all interfaces, or on a unix socket next to a TCP listener) answers on every one of them.
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1")
DEFAULT_STORE_PORTS = {"postgresql": 5432, "postgis": 5432, "mysql": 3306, "redis": 6379}


def _ports(value: Any) -> list[int]:
    """A PORT setting as ports: libpq accepts "5432,5433" for several hosts."""
    ports = []
    for part in str(value or "").split(","):
        part = part.strip()
        port = ascii_int(part)
        if port is not None and 0 < port < 65536:
            ports.append(port)
    return ports


def _database_endpoints(db: dict[str, Any]) -> list[tuple[str, int | None]]:
    engine = (db.get("ENGINE") or "").rsplit(".", 1)[-1]
    default_port = DEFAULT_STORE_PORTS.get(engine)
    if default_port is None and not db.get("PORT"):
        return []  # SQLite: a file, nothing to reach over TCP
    ports = _ports(db.get("PORT"))
    if not ports:
        # An empty PORT means libpq's default, which PGPORT changes; 5432 stays denied too.
        ports = _ports(os.environ.get("PGPORT")) if engine.startswith("post") else []
        ports = list(dict.fromkeys([*ports, default_port] if default_port else ports))
    hosts = [h.strip() for h in str(db.get("HOST") or "").split(",") if h.strip()]
    endpoints: list[tuple[str, int | None]] = []
    for port in ports:
        for network in LOOPBACK_NETWORKS:
            endpoints.append((network, port))
        for host in hosts:
            # A socket directory ("/run/postgresql") is local: the loopback entries cover it.
            # A host the policy could not parse would make every policy fail to build.
            if not host.startswith("/") and is_valid_entry((host, port)):
                endpoints.append((host, port))
    return endpoints


def _redis_endpoints(url: str) -> list[tuple[str, int | None]]:
    parsed = urlsplit(url)
    if parsed.scheme not in ("redis", "rediss", "unix", "redis+socket"):
        return []
    try:
        port = parsed.port or DEFAULT_STORE_PORTS["redis"]
    except ValueError:
        port = DEFAULT_STORE_PORTS["redis"]
    endpoints: list[tuple[str, int | None]] = [(n, port) for n in LOOPBACK_NETWORKS]
    host = parsed.hostname
    if parsed.scheme in ("redis", "rediss") and host and is_valid_entry((host, port)):
        endpoints.append((host, port))
    return endpoints


def internal_endpoints(
    databases: dict[str, dict[str, Any]] | None = None,
    redis_urls: Iterable[str] | None = None,
) -> list[tuple[str, int | None]]:
    """This app's own databases and Redis, as (host or network, port): never a destination.

    Each store's port is denied on every loopback address whatever its configured host says:
    "localhost", "127.0.0.1", "::1", an empty host or a unix socket all leave a TCP listener
    on this host reachable through any loopback spelling, and an allow entry for one loopback
    address must not open the store on another. The configured host is denied as well, for
    stores elsewhere ("db" in compose); the policy resolves names when it is built.
    """
    if databases is None:
        databases = settings.DATABASES
    if redis_urls is None:
        redis_urls = [
            getattr(settings, name, "") or ""
            for name in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
        ]
    endpoints: list[tuple[str, int | None]] = []
    for db in databases.values():
        endpoints.extend(_database_endpoints(db))
    for url in redis_urls:
        if url:
            endpoints.extend(_redis_endpoints(url))
    return list(dict.fromkeys(endpoints))


# Building a policy resolves the database's and Redis's host names (they can be names in
# compose), so policies are kept for a few minutes per process instead of built per run.
_POLICY_TTL_SECONDS = 300.0
_policy_cache: dict[tuple[tuple[str, ...], bool], tuple[float, AddressPolicy]] = {}
_policy_lock = threading.Lock()


def make_policy(allow: Iterable[str], *, allow_public: bool = True) -> AddressPolicy:
    key = (tuple(allow), allow_public)
    now = time.monotonic()
    with _policy_lock:
        cached = _policy_cache.get(key)
        if cached is not None and now - cached[0] < _POLICY_TTL_SECONDS:
            return cached[1]
    policy = AddressPolicy(
        allow=key[0], extra_denied=internal_endpoints(), allow_public=allow_public
    )
    with _policy_lock:
        if len(_policy_cache) > 256:
            _policy_cache.clear()
        _policy_cache[key] = (now, policy)
    return policy


def monitoring_for(environment: Environment) -> EnvironmentMonitoring:
    """The environment's monitoring settings; defaults (public addresses only) until saved."""
    try:
        return environment.monitoring
    except EnvironmentMonitoring.DoesNotExist:
        return EnvironmentMonitoring(environment=environment)


def policy_for(environment: Environment) -> AddressPolicy:
    settings_row = monitoring_for(environment)
    try:
        return make_policy(settings_row.allow_entries(), allow_public=settings_row.allow_public)
    except ValueError:
        # Saved entries are validated; should one no longer parse, open nothing extra.
        logger.warning("invalid allow-list of environment %s; ignoring it", environment.pk)
        return make_policy((), allow_public=settings_row.allow_public)


def check_destination(environment: Environment, url: str, field_name: str = "url") -> Decision:
    """The guard's verdict on a URL for this environment, or a ValidationError naming its rule.

    Early feedback only: the guard decides again at connect time, on every redirect too.
    """
    decision = policy_for(environment).check_url(url)
    if not decision.allowed:
        raise ValidationError(
            {
                field_name: f"Refused by the address guard (rule: {decision.rule}): "
                f"{decision.message}. An admin can allow it in the environment's allow-list."
                if decision.rule not in ("scheme", "invalid-url", "unresolvable")
                else f"Refused by the address guard (rule: {decision.rule}): {decision.message}."
            },
            code=decision.rule,
        )
    return decision


# --- Environment settings -------------------------------------------------------------------


ENV_SETTING_FIELDS = [
    "allow_list",
    "allow_public",
    "contact_emails",
    "webhook_url",
    "proxy_url",
    "client_certificate",
    "client_key",
]


def _clean_allow_list(text: str) -> str:
    entries = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if len(entries) > 100:
        raise ValidationError({"allow_list": "At most 100 entries."})
    for entry in entries:
        try:
            AddressPolicy(allow=[entry])
        except ValueError as exc:
            raise ValidationError({"allow_list": f"{exc}."}) from None
    return "\n".join(entries)


def _clean_emails(text: str) -> str:
    emails = [e.strip() for e in (text or "").replace(",", "\n").splitlines() if e.strip()]
    if len(emails) > 50:
        raise ValidationError({"contact_emails": "At most 50 addresses."})
    for email in emails:
        try:
            validate_email(email)
        except ValidationError:
            raise ValidationError(
                {"contact_emails": f"'{email}' is not an email address."}
            ) from None
    return "\n".join(emails)


@transaction.atomic
def update_environment_monitoring(
    actor: Any, membership: Membership, environment: Environment, **changes: Any
) -> EnvironmentMonitoring:
    """Change what an environment's checks may reach and whom they notify.

    Opening addresses (allow-list, public access) needs the admin role; contacts need a lead.
    """
    if environment.project_id != membership.project_id:
        raise ValidationError("That environment belongs to another project.")
    changes = {k: v for k, v in changes.items() if k in ENV_SETTING_FIELDS and v is not None}
    if {"allow_list", "allow_public", "proxy_url"} & set(changes):
        require_role(membership, Membership.Role.ADMIN)
    else:
        require_role(membership, Membership.Role.LEAD)
    row, _ = EnvironmentMonitoring.objects.select_for_update().get_or_create(
        environment=environment
    )
    before = _env_snapshot(row)
    if "allow_list" in changes:
        row.allow_list = _clean_allow_list(changes["allow_list"])
    if "allow_public" in changes:
        row.allow_public = bool(changes["allow_public"])
    if "contact_emails" in changes:
        row.contact_emails = _clean_emails(changes["contact_emails"])
    if "webhook_url" in changes:
        url = (changes["webhook_url"] or "").strip()
        if url:
            # Checked against the policy as it will be after this change.
            policy = AddressPolicy(
                allow=row.allow_entries(),
                extra_denied=internal_endpoints(),
                allow_public=row.allow_public,
            )
            decision = policy.check_url(url)
            if not decision.allowed:
                raise ValidationError(
                    {
                        "webhook_url": f"Refused by the address guard (rule: {decision.rule}): "
                        f"{decision.message}."
                    }
                )
        row.webhook_url = url
    if "proxy_url" in changes:
        # A proxy connects on our behalf: its own address is judged like a target's.
        row.proxy_url = probes.clean_proxy_url(
            make_policy(row.allow_entries(), allow_public=row.allow_public), changes["proxy_url"]
        )
    if {"client_certificate", "client_key"} & set(changes):
        row.client_certificate, row.client_key = probes.clean_client_certificate(
            changes.get("client_certificate", row.client_certificate),
            changes.get("client_key", row.client_key),
        )
    row.updated_at = timezone.now()
    row.updated_by = actor if getattr(actor, "is_authenticated", False) else None
    row.save()
    environment.monitoring = row
    events.publish(
        environment.project.topic,
        "environment.monitoring_updated",
        project=environment.project_id,
        actor=actor,
        obj=environment,
        before=before,
        after=_env_snapshot(row),
    )
    return row


def _env_snapshot(row: EnvironmentMonitoring) -> dict[str, Any]:
    return {
        "allow_list": row.allow_entries(),
        "allow_public": row.allow_public,
        "contact_emails": row.emails(),
        # The webhook URL is a credential: record only whether there is one.
        "webhook": bool(row.webhook_url),
        "proxy": row.proxy_origin(),
        "client_certificate": bool(row.client_certificate),
    }


# --- Check definitions ----------------------------------------------------------------------


CHECK_FIELDS = [
    "name",
    "probe",
    "expect",
    "heartbeat_period_seconds",
    "heartbeat_grace_seconds",
    "heartbeat_cron",
    "heartbeat_timezone",
    "method",
    "url",
    "headers",
    "body",
    "assertions",
    "timeout_seconds",
    "follow_redirects",
    "interval_seconds",
    "enabled",
]


def clean_assertions(value: Any) -> list[dict[str, Any]]:
    """Assertions as dicts or in the compact form ('$.status == "ok"'), normalised."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [line for line in value.splitlines() if line.strip()]
    if not isinstance(value, list):
        raise ValidationError({"assertions": "Give a list of assertions."})
    if len(value) > MAX_ASSERTIONS:
        raise ValidationError({"assertions": f"At most {MAX_ASSERTIONS} assertions."})
    specs = []
    try:
        for index, item in enumerate(value):
            if isinstance(item, str):
                try:
                    specs.append(parse_assertion(item))
                except AssertionSpecError as exc:
                    raise AssertionSpecError(f"assertion #{index + 1}: {exc}") from None
            else:
                specs.append(item)
        return validate_assertions(specs)
    except AssertionSpecError as exc:
        raise ValidationError({"assertions": str(exc)}) from None


def _clean_headers(value: Any, field_name: str) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise ValidationError({field_name: "Give headers as an object of name to value."})
    if len(value) > MAX_HEADERS:
        raise ValidationError({field_name: f"At most {MAX_HEADERS} headers."})
    cleaned = {}
    for name, header_value in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValidationError({field_name: f"{name!r} is not a header name."})
        if not isinstance(header_value, str) or len(header_value) > 8192:
            raise ValidationError({field_name: f"The value of {name} must be text (8 KB at most)."})
        if "\r" in header_value or "\n" in header_value or "\0" in header_value:
            raise ValidationError({field_name: f"The value of {name} contains a line break."})
        cleaned[name] = header_value
    return cleaned


def _apply_fields(check: Check, fields: dict[str, Any]) -> None:
    for key, value in fields.items():
        if key == "assertions":
            value = clean_assertions(value)
        elif key == "headers":
            value = _clean_headers(value, "headers")
        elif key == "method":
            value = (value or "GET").upper()
            if value not in METHODS:
                raise ValidationError({"method": f"Use one of {', '.join(METHODS)}."})
        elif key == "name":
            value = " ".join((value or "").split())
            if not value or len(value) > 120:
                raise ValidationError({"name": "A name is 1 to 120 characters."})
        elif key == "body":
            value = value or ""
            if len(value) > MAX_BODY_CHARS:
                raise ValidationError({"body": "A request body is at most 64 KB."})
        elif key == "url":
            value = (value or "").strip()
        elif key == "timeout_seconds":
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValidationError({"timeout_seconds": "Give a number of seconds."}) from None
        elif key == "probe":
            value = probes.clean_probe(value)
        elif key == "expect":
            value = probes.clean_expect(value)
        elif key in ("heartbeat_period_seconds", "heartbeat_grace_seconds"):
            try:
                value = None if value in (None, "") else int(value)
            except (TypeError, ValueError):
                raise ValidationError({key: "Give a whole number of seconds."}) from None
        elif key in ("heartbeat_cron", "heartbeat_timezone"):
            if not isinstance(value, str | type(None)) or len(value or "") > 100:
                raise ValidationError({key: "Give text of 100 characters at most."})
            value = (value or "").strip()
        elif key == "interval_seconds" and value in ("", 0):
            value = None
        setattr(check, key, value)


def _set_secret_headers(check: Check, secret_headers: dict[str, str] | None) -> None:
    if secret_headers is None:
        return  # keep what is stored
    cleaned = _clean_headers(secret_headers, "secret_headers")
    check.secret_headers = json.dumps(cleaned) if cleaned else ""
    check.secret_header_names = sorted(cleaned)


def _validate_destination(check: Check) -> None:
    if check.is_suite:
        return
    probes.check_http_fields(check)
    if check.probe == Check.Probe.HEARTBEAT:
        heartbeats.validate(check)
        heartbeats.prepare(check, timezone.now())
        return
    if check.probe == Check.Probe.TCP:
        probes.validate_tcp_destination(policy_for(check.environment), check.url)
        return
    if not check.url and check.service is None:
        raise ValidationError({"url": "Give a URL, or a service whose health path to check."})
    resolved = check.resolved_url()
    if not resolved:
        raise ValidationError(
            {
                "url": f"The environment {check.environment.name} has no base URL, so a path "
                "cannot be resolved: give a full URL or set the base URL in project settings."
            }
        )
    check_destination(check.environment, resolved)


def _check_snapshot(check: Check) -> dict[str, Any]:
    return {
        "name": check.name,
        "kind": check.kind,
        "probe": check.probe,
        "environment": check.environment.name,
        "service": check.service.name if check.service_id else None,
        "suite": check.parent_id,
        "method": check.method,
        "url": check.url,
        "headers": sorted(check.headers or {}),
        # Names only: a secret's value never reaches an event, a log or a page.
        "secret_headers": list(check.secret_header_names),
        "assertions": check.assertions,
        "timeout_seconds": check.timeout_seconds,
        "interval_seconds": check.interval_seconds,
        "enabled": check.enabled,
    }


def _resolve_environment(membership: Membership, environment: Environment | str) -> Environment:
    project = membership.project
    if isinstance(environment, Environment):
        if environment.project_id != project.pk:
            raise ValidationError({"environment": "No such environment in this project."})
        return environment
    found = Environment.objects.filter(project=project, name=environment).first()
    if found is None:
        raise ValidationError({"environment": f"No environment '{environment}' in this project."})
    return found


def _resolve_service(membership: Membership, service: Service | str | None) -> Service | None:
    if service in (None, ""):
        return None
    if isinstance(service, Service):
        if service.project_id != membership.project_id:
            raise ValidationError({"service": "No such service in this project."})
        return service
    found = Service.objects.filter(project_id=membership.project_id, name=service).first()
    if found is None:
        raise ValidationError({"service": f"No service '{service}' in this project."})
    return found


def _save(check: Check) -> None:
    check.full_clean(validate_unique=False, validate_constraints=False)
    try:
        with transaction.atomic():
            check.save()
    except IntegrityError as exc:
        where = f"suite '{check.parent.name}'" if check.parent_id else check.environment.name
        raise Conflict(f"A check named '{check.name}' exists in {where}.") from exc


def _schedule_from(check: Check, now: datetime) -> None:
    check.next_run_at = now if check.interval_seconds and not check.is_step else None


@transaction.atomic
def create_check(
    actor: Any,
    membership: Membership,
    *,
    environment: Environment | str | None = None,
    service: Service | str | None = None,
    suite: Check | None = None,
    secret_headers: dict[str, str] | None = None,
    **fields: Any,
) -> Check:
    """Define a check (or, with ``suite``, append a step to a smoke suite)."""
    require_role(membership, Membership.Role.ENGINEER)
    now = timezone.now()
    if suite is not None:
        if suite.project_id != membership.project_id or not suite.is_suite:
            raise ValidationError("That suite does not exist in this project.")
        environment = suite.environment
        fields.pop("interval_seconds", None)
    if environment is None:
        raise ValidationError({"environment": "Choose an environment."})
    env = _resolve_environment(membership, environment)
    check = Check(
        project=membership.project,
        environment=env,
        service=_resolve_service(membership, service),
        kind=Check.Kind.CHECK,
        parent=suite,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
        created_at=now,
        updated_at=now,
    )
    if suite is not None:
        last = suite.steps.aggregate(m=Max("position"))["m"]
        check.position = (last or 0) + 1
    _apply_fields(check, {k: v for k, v in fields.items() if k in CHECK_FIELDS})
    if "assertions" not in fields and check.probe == Check.Probe.HTTP:
        check.assertions = clean_assertions(["status in [200, 204]"])
    _set_secret_headers(check, secret_headers)
    _validate_destination(check)
    _schedule_from(check, now)
    _save(check)
    topic_obj = suite or check
    events.publish(
        membership.project.topic,
        "check.step_added" if suite is not None else "check.created",
        project=membership.project_id,
        actor=actor,
        obj=check,
        after=_check_snapshot(check),
        data={"check_id": topic_obj.pk, "name": check.name},
    )
    return check


@transaction.atomic
def create_suite(
    actor: Any,
    membership: Membership,
    *,
    environment: Environment | str,
    name: str,
    service: Service | str | None = None,
    interval_seconds: int | None = None,
    enabled: bool = True,
    steps: Sequence[dict[str, Any]] = (),
) -> Check:
    """A smoke suite and its steps (each a dict of check fields), in one transaction."""
    require_role(membership, Membership.Role.ENGINEER)
    if len(steps) > MAX_STEPS:
        raise ValidationError({"steps": f"At most {MAX_STEPS} steps."})
    now = timezone.now()
    suite = Check(
        project=membership.project,
        environment=_resolve_environment(membership, environment),
        service=_resolve_service(membership, service),
        kind=Check.Kind.SUITE,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
        created_at=now,
        updated_at=now,
    )
    _apply_fields(suite, {"name": name, "interval_seconds": interval_seconds, "enabled": enabled})
    _schedule_from(suite, now)
    _save(suite)
    events.publish(
        membership.project.topic,
        "check.created",
        project=membership.project_id,
        actor=actor,
        obj=suite,
        after=_check_snapshot(suite),
        data={"check_id": suite.pk, "name": suite.name},
    )
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            raise ValidationError({"steps": f"Step {index + 1} is not an object."})
        step = dict(step)
        try:
            create_check(
                actor,
                membership,
                suite=suite,
                service=step.pop("service", None),
                secret_headers=step.pop("secret_headers", None),
                **step,
            )
        except ValidationError as exc:
            detail = exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}
            raise ValidationError(
                {
                    "steps": [
                        f"Step {index + 1}: "
                        + "; ".join(
                            f"{k}: {' '.join(v)}" if k else " ".join(v) for k, v in detail.items()
                        )
                    ]
                }
            ) from None
    return suite


@transaction.atomic
def update_check(
    actor: Any,
    membership: Membership,
    check: Check,
    *,
    secret_headers: dict[str, str] | None = None,
    service: Service | str | None | type[Ellipsis] = ...,
    **changes: Any,
) -> Check:
    """Change a check, a suite or a step. ``secret_headers``: None keeps them, {} removes them."""
    require_role(membership, Membership.Role.ENGINEER)
    check = (
        Check.objects.select_for_update(of=("self",))
        .select_related("environment", "service", "parent", "project")
        .get(pk=check.pk, project_id=membership.project_id)
    )
    before = _check_snapshot(check)
    fields = {k: v for k, v in changes.items() if k in CHECK_FIELDS}
    if check.is_step:
        fields.pop("interval_seconds", None)
    if check.is_suite:
        fields = {k: v for k, v in fields.items() if k in ("name", "interval_seconds", "enabled")}
    schedule_changed = any(
        k in fields and fields[k] != getattr(check, k) for k in ("interval_seconds", "enabled")
    )
    _apply_fields(check, fields)
    if service is not ...:
        check.service = _resolve_service(membership, service)  # type: ignore[arg-type]
    if not check.is_suite:
        _set_secret_headers(check, secret_headers)
        _validate_destination(check)
    now = timezone.now()
    if schedule_changed:
        _schedule_from(check, now)
    check.updated_at = now
    _save(check)
    events.publish(
        membership.project.topic,
        "check.updated",
        project=membership.project_id,
        actor=actor,
        obj=check,
        before=before,
        after=_check_snapshot(check),
        data={"check_id": (check.parent_id or check.pk), "name": check.name},
    )
    return check


@transaction.atomic
def delete_check(actor: Any, membership: Membership, check: Check) -> None:
    """Delete a check or suite with its results (a suite takes its steps along)."""
    require_role(membership, Membership.Role.ENGINEER)
    check = (
        Check.objects.select_for_update(of=("self",))
        .select_related("environment", "service")
        .get(pk=check.pk, project_id=membership.project_id)
    )
    before = _check_snapshot(check)
    check_id = check.pk
    check.delete()
    events.publish(
        membership.project.topic,
        "check.deleted",
        project=membership.project_id,
        actor=actor,
        before=before,
        data={"check_id": check_id, "name": before["name"]},
    )


# --- Running --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one run of a check or suite found; ``result`` is the stored row once recorded."""

    check: Check
    passed: bool
    status_code: int | None
    latency_ms: float | None
    failures: list[dict[str, Any]]
    error: str
    excerpt: str
    started_at: datetime
    details: list[dict[str, Any]] = field(default_factory=list)
    tls: TLSInfo | None = None
    # The stored row's id once recorded; `result` builds the row object only when asked (a
    # batch of 200 model instances nobody reads cost ~5% of the worker path).
    result_id: int | None = None
    _result: CheckResult | None = field(default=None, repr=False)
    _trigger: str = field(default="", repr=False)

    @property
    def result(self) -> CheckResult | None:
        if self._result is None and self.result_id is not None:
            self._result = _result_of(self, self._trigger, self.result_id)
        return self._result

    @result.setter
    def result(self, row: CheckResult) -> None:
        self._result, self.result_id = row, row.pk

    @property
    def summary(self) -> str:
        if self.error:
            return self.error[:500]
        if self.failures:
            first = self.failures[0]
            prefix = f"{first['step']}: " if first.get("step") else ""
            return (prefix + first["message"])[:500]
        latency = f" in {self.latency_ms:.0f} ms" if self.latency_ms is not None else ""
        if self.check.is_suite:
            return (
                f"{len(self.details)} step{'s' if len(self.details) != 1 else ''} passed{latency}"
            )
        if self.check.probe == Check.Probe.TCP:
            return f"TCP connected{latency}"
        if self.check.probe == Check.Probe.HEARTBEAT:
            return "ping received" + (
                f", job took {self.latency_ms / 1000:.1f} s" if latency else ""
            )
        return f"HTTP {self.status_code}{latency}"

    def as_dict(self) -> dict[str, Any]:
        """The API's answer to a run."""
        return {
            "check_id": self.check.pk,
            "result_id": self.result_id,
            "passed": self.passed,
            "status_code": self.status_code,
            "latency_ms": self.latency_ms,
            "failures": self.failures,
            "error": self.error or None,
            "excerpt": self.excerpt,
            "steps": self.details,
            "started_at": self.started_at.isoformat(),
        }


@dataclass
class _Plan:
    check: Check
    policy: AddressPolicy
    # The environment's proxy, client certificate and why they cannot be used (probes).
    transport: tuple[str | None, ClientCertificate | None, str] = (None, None, "")
    spec: CheckSpec | None = None
    problem: str = ""  # why it cannot run at all (no URL, undecryptable secret)
    steps: list[_Plan] = field(default_factory=list)


def _failure_dict(failure: Failure, step: str | None = None) -> dict[str, Any]:
    data = {
        "message": failure.message,
        "expected": failure.expected,
        "actual": failure.actual,
        "assertion": dict(failure.assertion),
    }
    if step is not None:
        data["step"] = step
    return data


def _error_failure(error: str, step: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "message": error,
        "expected": "a response",
        "actual": None,
        "assertion": None,
    }
    blocked = _BLOCKED.match(error)
    if blocked:
        data["rule"] = blocked["rule"]
    if step is not None:
        data["step"] = step
    return data


def _spec_for(
    check: Check,
    policy: AddressPolicy,
    transport: tuple[str | None, ClientCertificate | None, str] = (None, None, ""),
) -> _Plan:
    plan = _Plan(check=check, policy=policy, transport=transport)
    proxy, certificate, problem = transport
    if check.probe == Check.Probe.HEARTBEAT:
        plan.problem = "a heartbeat check is pinged by its job; there is nothing to run"
        return plan
    if problem and check.probe == Check.Probe.HTTP:
        plan.problem = problem
        return plan
    url = check.resolved_url()
    if not url:
        plan.problem = "no URL: the environment has no base URL for this path"
        return plan
    try:
        headers = check.request_headers()
    except DecryptionError:
        plan.problem = "the secret headers cannot be decrypted with the current key"
        return plan
    plan.spec = CheckSpec(
        id=check.pk,
        method=check.method,
        url=url,
        headers=headers,
        body=check.body or None,
        timeout_s=min(max(check.timeout_seconds, 0.1), MAX_TIMEOUT_SECONDS),
        assertions=check.assertions,
        follow_redirects=check.follow_redirects,
        probe=check.probe,
        expect=check.expect or None,
        proxy=proxy,
        client_certificate=certificate,
    )
    return plan


def _plan(checks: Sequence[Check]) -> list[_Plan]:
    """Load everything a run needs, so the async part never touches the database."""
    policies: dict[int, AddressPolicy] = {}
    transports: dict[int, tuple[str | None, ClientCertificate | None, str]] = {}
    suite_ids = [c.pk for c in checks if c.is_suite]
    steps_by_suite: dict[int, list[Check]] = defaultdict(list)
    if suite_ids:
        for step in (
            Check.objects.filter(parent_id__in=suite_ids)
            .select_related("environment", "service")
            .order_by("parent_id", "position", "pk")
        ):
            steps_by_suite[step.parent_id].append(step)
    plans = []
    for check in checks:
        env = check.environment
        if env.pk not in policies:
            policies[env.pk] = policy_for(env)
            transports[env.pk] = probes.transport_for(monitoring_for(env))
        policy, transport = policies[env.pk], transports[env.pk]
        if check.is_suite:
            plan = _Plan(check=check, policy=policy)
            plan.steps = [_spec_for(step, policy, transport) for step in steps_by_suite[check.pk]]
            if not plan.steps:
                plan.problem = "this suite has no steps yet"
            plans.append(plan)
        else:
            plans.append(_spec_for(check, policy, transport))
    return plans


def _outcome(check: Check, result: EngineResult, step: str | None = None) -> Outcome:
    failures = [_failure_dict(f, step) for f in result.failures]
    if result.error:
        failures = [_error_failure(result.error, step)]
    return Outcome(
        check=check,
        passed=result.passed,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
        failures=failures,
        error=result.error or "",
        excerpt=result.excerpt[:EXCERPT_CHARS],
        started_at=result.started_at,
        tls=result.tls,
    )


def _problem_outcome(check: Check, problem: str, step: str | None = None) -> Outcome:
    return Outcome(
        check=check,
        passed=False,
        status_code=None,
        latency_ms=None,
        failures=[_error_failure(problem, step)],
        error=problem,
        excerpt="",
        started_at=timezone.now(),
    )


async def _run_suite(plan: _Plan, runner: CheckRunner) -> Outcome:
    """Steps in order, each through the run's shared runner (so under the same per-host limit
    as every other check of the run); the suite passes if all do."""
    if plan.problem:
        return _problem_outcome(plan.check, plan.problem)
    started_at = timezone.now()
    details: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    total_latency = 0.0
    last_status = None
    first_failed: Outcome | None = None
    last: Outcome | None = None
    deadline = time.monotonic() + SUITE_DEADLINE_SECONDS
    for step_plan in plan.steps:
        name = step_plan.check.name
        if time.monotonic() > deadline:
            step = _problem_outcome(
                step_plan.check,
                f"not run: the suite took longer than {SUITE_DEADLINE_SECONDS:g} s",
                name,
            )
        elif step_plan.problem:
            step = _problem_outcome(step_plan.check, step_plan.problem, name)
        else:
            result = await runner.run(step_plan.spec, plan.policy)
            step = _outcome(step_plan.check, result, name)
        details.append(
            {
                "step": name,
                "check_id": step_plan.check.pk,
                "passed": step.passed,
                "status_code": step.status_code,
                "latency_ms": step.latency_ms,
                "failures": step.failures,
            }
        )
        failures.extend(step.failures)
        total_latency += step.latency_ms or 0.0
        last_status = step.status_code
        last = step
        if not step.passed and first_failed is None:
            first_failed = step
    shown = first_failed or last
    return Outcome(
        check=plan.check,
        passed=first_failed is None,
        status_code=first_failed.status_code if first_failed else last_status,
        latency_ms=round(total_latency, 3),
        failures=failures,
        error="",
        excerpt=shown.excerpt if shown else "",
        started_at=started_at,
        details=details,
    )


async def _execute(
    plans: list[_Plan], *, inner_backend: SocketFactory | None = None, trust: str | None = None
) -> list[Outcome]:
    """Run every plan concurrently through one runner: one pooled, guarded client per address
    policy, and one set of per-host and global limits for plain checks and suite steps alike."""
    outcomes: list[Outcome | None] = [None] * len(plans)

    async def run_one(index: int, plan: _Plan, runner: CheckRunner) -> None:
        if plan.check.is_suite:
            outcomes[index] = await _run_suite(plan, runner)
        else:
            outcomes[index] = _outcome(plan.check, await runner.run(plan.spec, plan.policy))

    async with CheckRunner(
        per_host_limit=PER_HOST_LIMIT,
        max_connections=MAX_CONNECTIONS,
        inner_backend=inner_backend,
        trust=trust,
    ) as runner:
        jobs = []
        for index, plan in enumerate(plans):
            if plan.problem and not plan.check.is_suite:
                outcomes[index] = _problem_outcome(plan.check, plan.problem)
            else:
                jobs.append(run_one(index, plan, runner))
        await asyncio.gather(*jobs)
    return [o for o in outcomes if o is not None]


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code.

    In a thread where an event loop already runs (an async caller, a test harness), asyncio.run
    would refuse; the coroutine then gets a thread and a loop of its own.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def run_units(
    checks: Sequence[Check],
    *,
    trigger: str,
    actor: Any = None,
    inner_backend: SocketFactory | None = None,
    trust: str | None = None,
) -> list[Outcome]:
    """Run checks and suites now, store their results and return the outcomes, in order.

    Blocking; call it from a task, a management command or a (sync) request, never from inside
    a running event loop. ``inner_backend`` is for tests: the socket layer under the guard;
    ``trust``: extra CA certificates (PEM) to trust besides certifi's roots.
    """
    # Heartbeat checks are pinged by their jobs: running one would only record a false failure.
    checks = [c for c in checks if not c.is_step and c.probe != Check.Probe.HEARTBEAT]
    if not checks:
        return []
    plans = _plan(checks)
    outcomes = run_async(lambda: _execute(plans, inner_backend=inner_backend, trust=trust))
    _record(outcomes, trigger=trigger, actor=actor)
    evaluate_targets({c.environment_id for c in checks})
    return outcomes


def load_checks(ids: Iterable[int]) -> list[Check]:
    """The checks (not steps) of these ids, in id order, with their environment (and its
    monitoring settings), service and project.

    The related rows are loaded once each and shared by the checks that point at them: a batch
    of 200 checks has a handful of environments, and select_related would build every one of
    them 200 times (a third of the time a worker spent loading a batch).
    """
    return with_related(
        list(Check.objects.filter(pk__in=list(ids), parent__isnull=True).order_by("pk"))
    )


def with_related(checks: list[Check]) -> list[Check]:
    """Attach environments (with monitoring settings), projects and services, each loaded once."""
    if not checks:
        return checks
    environments = Environment.objects.select_related("monitoring").in_bulk(
        {c.environment_id for c in checks}
    )
    projects = Project.objects.in_bulk(
        {c.project_id for c in checks} | {e.project_id for e in environments.values()}
    )
    for environment in environments.values():
        environment.project = projects[environment.project_id]
    service_ids = {c.service_id for c in checks if c.service_id is not None}
    services = Service.objects.in_bulk(service_ids) if service_ids else {}
    for check in checks:
        check.environment = environments[check.environment_id]
        check.project = projects[check.project_id]
        if check.service_id is not None:
            check.service = services[check.service_id]
    return checks


# --- Recording ------------------------------------------------------------------------------


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


# On PostgreSQL a batch is stored by a few statements whose text does not grow with the batch:
# the results by COPY, the rollups and each check's latest result as one JSON parameter each.
# bulk_create and VALUES lists with a placeholder per value (6 to 10 per row) cost more than
# running the checks: Django compiles every row, and psycopg splits a query of thousands of
# placeholders on the client (~10 ms per statement of a 200-check batch). Other databases (the
# embedded SQLite) keep the ORM's way.


def _pg_text(text: str) -> str:
    # PostgreSQL text cannot hold NUL; a response can (and an excerpt is cut from it).
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return _pg_text(value)
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_pg_text(str(k)): _without_nul(v) for k, v in value.items()}
    return value


def _pg_json(value: Any) -> str:
    text = json.dumps(value)
    # jsonb refuses the escape \u0000 as well.
    return json.dumps(_without_nul(value)) if "\\u0000" in text else text


def _id_array(ids: Iterable[int]) -> str:
    """Ids as one PostgreSQL array literal, for `= ANY(%s::bigint[])`: one parameter, not one
    per id."""
    return "{" + ",".join(str(int(i)) for i in ids) + "}"


RESULT_COLUMNS = [
    "health_check_id",
    "started_at",
    "passed",
    "status_code",
    "latency_ms",
    "error",
    "failures",
    "excerpt",
    "details",
    "trigger",
]


def _result_of(outcome: Outcome, trigger: str, result_id: int | None = None) -> CheckResult:
    return CheckResult(
        id=result_id,
        health_check_id=outcome.check.pk,
        started_at=outcome.started_at,
        passed=outcome.passed,
        status_code=outcome.status_code,
        latency_ms=outcome.latency_ms,
        error=outcome.error,
        failures=outcome.failures,
        excerpt=outcome.excerpt,
        details=outcome.details,
        trigger=trigger,
    )


def _store_results(outcomes: Sequence[Outcome], trigger: str) -> None:
    """One result row per outcome, attached to it as ``outcome.result``."""
    if connection.vendor != "postgresql":
        results = CheckResult.objects.bulk_create([_result_of(o, trigger) for o in outcomes])
        for outcome, result in zip(outcomes, results, strict=True):
            outcome.result = result
        return
    table = CheckResult._meta.db_table
    quote = connection.ops.quote_name
    columns = ", ".join(quote(c) for c in ["id", *RESULT_COLUMNS])
    with connection.cursor() as cursor:
        # COPY returns no ids, so they are drawn from the table's sequence first.
        cursor.execute(
            "SELECT nextval(s.seq) FROM (SELECT pg_get_serial_sequence(%s, 'id')::regclass AS seq)"
            " AS s, generate_series(1, %s)",
            [table, len(outcomes)],
        )
        ids = [row[0] for row in cursor.fetchall()]
        with cursor.cursor.copy(f"COPY {quote(table)} ({columns}) FROM STDIN") as copy:
            for result_id, o in zip(ids, outcomes, strict=True):
                copy.write_row(
                    (
                        result_id,
                        o.check.pk,
                        o.started_at,
                        o.passed,
                        o.status_code,
                        o.latency_ms,
                        _pg_text(o.error),
                        _pg_json(o.failures),
                        _pg_text(o.excerpt),
                        _pg_json(o.details),
                        trigger,
                    )
                )
    for result_id, outcome in zip(ids, outcomes, strict=True):
        outcome.result_id, outcome._trigger = result_id, trigger


def _add_to_rollups(outcomes: Sequence[Outcome]) -> None:
    """Add the outcomes to their hourly and daily buckets with one upsert that sums."""
    buckets: dict[tuple[int, str, datetime], list[float]] = {}
    for outcome in outcomes:
        started = outcome.started_at.astimezone(UTC)
        timed = outcome.status_code is not None and outcome.latency_ms is not None
        latency = float(outcome.latency_ms or 0.0) if timed else 0.0
        for span, start in (("hour", _hour(started)), ("day", _day(started))):
            bucket = buckets.setdefault((outcome.check.pk, span, start), [0, 0, 0, 0.0, 0.0])
            bucket[0] += 1
            bucket[1] += 0 if outcome.passed else 1
            bucket[2] += 1 if timed else 0
            bucket[3] += latency
            bucket[4] = max(bucket[4], latency)
    if not buckets:
        return
    table = CheckRollup._meta.db_table
    # Sorted, so two transactions touching the same buckets take their locks in one order.
    ordered = sorted(buckets.items())
    add = (
        "ON CONFLICT (health_check_id, span, start) DO UPDATE SET "
        f"runs = {table}.runs + excluded.runs, "
        f"failures = {table}.failures + excluded.failures, "
        f"latency_count = {table}.latency_count + excluded.latency_count, "
        f"latency_sum_ms = {table}.latency_sum_ms + excluded.latency_sum_ms, "
        f"latency_max_ms = CASE WHEN excluded.latency_max_ms > {table}.latency_max_ms "
        f"THEN excluded.latency_max_ms ELSE {table}.latency_max_ms END"
    )
    columns = (
        "health_check_id, span, start, runs, failures, latency_count, latency_sum_ms, "
        "latency_max_ms"
    )
    if connection.vendor == "postgresql":
        payload = json.dumps(
            [
                [check_id, span, start.isoformat(), runs, failures, count, total, peak]
                for (check_id, span, start), (runs, failures, count, total, peak) in ordered
            ]
        )
        # json_array_elements keeps the array's order, so the sorted lock order holds.
        sql = (
            f"INSERT INTO {table} ({columns}) "  # noqa: S608
            "SELECT (b->>0)::bigint, b->>1, (b->>2)::timestamptz, (b->>3)::integer, "
            "(b->>4)::integer, (b->>5)::integer, (b->>6)::double precision, "
            "(b->>7)::double precision FROM json_array_elements(%s::json) AS b "
            f"{add}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [payload])
        return
    rows = []
    for (check_id, span, start), (runs, failures, count, total, peak) in ordered:
        rows.append(
            [
                check_id,
                span,
                connection.ops.adapt_datetimefield_value(start),
                runs,
                failures,
                count,
                total,
                peak,
            ]
        )
    placeholders = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    sql = f"INSERT INTO {table} ({columns}) VALUES {placeholders} {add}"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for row in rows for value in row])


LAST_RESULT_FIELDS = [
    "last_run_at",
    "last_passed",
    "last_status_code",
    "last_latency_ms",
    "last_summary",
]


def _store_last_results(checks: Sequence[Check], first_good: set[int], now: datetime) -> None:
    """Each check's latest result, and "passing" for the checks in ``first_good`` (a new
    check's first good run, which is no news), for a whole batch in one statement."""
    if connection.vendor != "postgresql":
        Check.objects.bulk_update(checks, LAST_RESULT_FIELDS)
        if first_good:
            Check.objects.filter(pk__in=first_good).update(
                status=Check.Status.PASSING, status_changed_at=now
            )
        return
    table = Check._meta.db_table
    payload = json.dumps(
        [
            [
                check.pk,
                check.last_run_at.isoformat() if check.last_run_at else None,
                check.last_passed,
                check.last_status_code,
                check.last_latency_ms,
                _pg_text(check.last_summary),
                check.pk in first_good,
            ]
            for check in checks
        ]
    )
    sql = (
        f"UPDATE {table} AS c SET last_run_at = (v->>1)::timestamptz, "  # noqa: S608
        "last_passed = (v->>2)::boolean, last_status_code = (v->>3)::integer, "
        "last_latency_ms = (v->>4)::double precision, last_summary = v->>5, "
        "status = CASE WHEN (v->>6)::boolean THEN %s ELSE c.status END, "
        "status_changed_at = CASE WHEN (v->>6)::boolean THEN %s ELSE c.status_changed_at END "
        "FROM json_array_elements(%s::json) AS v WHERE c.id = (v->>0)::bigint"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [Check.Status.PASSING.value, now, payload])


def _lock_checks(ids: list[int]) -> dict[int, str]:
    """Lock the checks (in id order) and return their current states."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, status FROM {Check._meta.db_table} "  # noqa: S608
                "WHERE id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE",
                [_id_array(ids)],
            )
            return dict(cursor.fetchall())
    return dict(
        Check.objects.select_for_update()
        .filter(pk__in=ids)
        .order_by("pk")
        .values_list("pk", "status")
    )


def _record(outcomes: Sequence[Outcome], *, trigger: str, actor: Any = None) -> None:
    if not outcomes:
        return
    now = timezone.now()
    with transaction.atomic():
        # Lock the checks so a delete cannot slip between reading and writing and two recorders
        # of the same check take turns; the statuses read here are current.
        current = _lock_checks([o.check.pk for o in outcomes])
        outcomes = [o for o in outcomes if o.check.pk in current]
        if not outcomes:
            return
        _store_results(outcomes, trigger)
        _add_to_rollups(outcomes)
        first_good: set[int] = set()
        for outcome in outcomes:
            check = outcome.check
            check.last_run_at = outcome.started_at
            check.last_passed = outcome.passed
            check.last_status_code = outcome.status_code
            check.last_latency_ms = outcome.latency_ms
            check.last_summary = outcome.summary
            if outcome.passed and current[check.pk] == Check.Status.UNKNOWN:
                first_good.add(check.pk)
                check.status, check.status_changed_at = Check.Status.PASSING, now
                current[check.pk] = Check.Status.PASSING
        _store_last_results([o.check for o in outcomes], first_good, now)
        probes.record_certificates(outcomes)
        for outcome in outcomes:
            _move_state(outcome, current[outcome.check.pk], now)
            if trigger in (CheckResult.Trigger.MANUAL, CheckResult.Trigger.API):
                check = outcome.check
                events.publish(
                    check.topic,
                    "check.ran",
                    project=check.project_id,
                    actor=actor,
                    obj=check,
                    data={
                        "check_id": check.pk,
                        "result_id": outcome.result_id,
                        "passed": outcome.passed,
                        "summary": outcome.summary,
                        "trigger": trigger,
                    },
                )


def record(outcomes: Sequence[Outcome], *, trigger: str, actor: Any = None) -> None:
    """Store outcomes produced outside a run (heartbeat pings and lateness) like run results."""
    _record(outcomes, trigger=trigger, actor=actor)


def _move_state(outcome: Outcome, old: str, now: datetime) -> None:
    """Passing <-> failing: one event and one notification, whoever else is recording."""
    check = outcome.check
    new = Check.Status.PASSING if outcome.passed else Check.Status.FAILING
    for _attempt in range(3):
        if old == new:
            check.status = new
            return
        if new not in Check.TRANSITIONS[old]:
            return
        # Compare-and-swap: only the writer that still sees `old` moves the state.
        if Check.objects.filter(pk=check.pk, status=old).update(status=new, status_changed_at=now):
            break
        old = Check.objects.filter(pk=check.pk).values_list("status", flat=True).first() or new
    else:
        return
    check.status, check.status_changed_at = new, now
    if Check.Status.FAILING not in (old, new):
        return  # a new check's first good run is not news
    verb = "check.failing" if new == Check.Status.FAILING else "check.recovered"
    data = {
        "check_id": check.pk,
        "name": check.name,
        "kind": check.kind,
        "environment": check.environment.name,
        "service": check.service.name if check.service_id else None,
        "from": old,
        "to": new,
        "summary": outcome.summary,
        "result_id": outcome.result_id,
    }
    event = events.publish(
        check.project.topic,
        verb,
        project=check.project_id,
        obj=check,
        before={"status": old},
        after={"status": new},
        data=data,
    )
    # The check page listens on the check's own topic. This copy carries no project so the
    # audit timeline shows the change once.
    events.publish(check.topic, verb, obj=check, data={**data, "event_id": event.pk})
    from . import notify

    notify.queue(
        environment=check.environment,
        event=verb,
        health_check=check,
        subject=notify.check_subject(check, new),
        text=notify.check_text(check, old, new, outcome.summary),
        payload=notify.check_payload(check, old, new, outcome.summary, event.created_at),
    )


# --- Scheduling -----------------------------------------------------------------------------


def next_slot(previous: datetime, interval_seconds: int, now: datetime) -> datetime:
    """The first slot of the schedule after `now`: previous + k * interval.

    Computed from the schedule, never from when a run finished, so runs do not drift; a slot
    missed while nothing was dispatching is skipped rather than run late in a burst.
    """
    interval = timedelta(seconds=interval_seconds)
    if previous > now:
        return previous
    missed = (now - previous) // interval
    return previous + (missed + 1) * interval


def claim_due_checks(now: datetime | None = None, limit: int = DISPATCH_LIMIT) -> list[uuid.UUID]:
    """Claim the checks due at `now` and enqueue them in batches; returns the batch tokens.

    Rows locked by another dispatcher are skipped, so two beats never claim the same run.
    """
    from . import tasks

    now = now or timezone.now()
    tokens: list[uuid.UUID] = []
    with transaction.atomic():
        due = list(
            Check.objects.select_for_update(skip_locked=True)
            .filter(
                enabled=True,
                interval_seconds__isnull=False,
                parent__isnull=True,
                next_run_at__lte=now,
            )
            .only("pk", "next_run_at", "interval_seconds")
            .order_by("next_run_at")[:limit]
        )
        batches: list[tuple[uuid.UUID, list[int]]] = []
        for start in range(0, len(due), RUN_BATCH):
            token = uuid.uuid4()
            tokens.append(token)
            batch = due[start : start + RUN_BATCH]
            for check in batch:
                check.next_run_at = next_slot(check.next_run_at, check.interval_seconds, now)
                check.dispatch_token = token
            batches.append((token, [c.pk for c in batch]))
        if due:
            Check.objects.bulk_update(due, ["next_run_at", "dispatch_token"])
        for token, ids in batches:
            transaction.on_commit(
                lambda token=token, ids=ids: tasks.run_batch.delay(str(token), ids)
            )
    return tokens


def take_batch(token: uuid.UUID | str, ids: Sequence[int] | None = None) -> list[int]:
    """The ids of a dispatched batch, once: a redelivered task gets an empty list.

    ``ids`` (what the dispatcher put in the batch) only narrow the search to those rows, so it
    is an index lookup instead of a scan of the whole table for the token; the token still
    decides which of them belong to this delivery.
    """
    token = uuid.UUID(str(token))
    if connection.vendor == "postgresql":
        table = Check._meta.db_table
        # One statement: it locks the rows it clears, so a redelivered task running at the same
        # time waits for it and then finds no row with the token.
        narrow, params = (
            ("id = ANY(%s::bigint[]) AND ", [_id_array(ids)]) if ids is not None else ("", [])
        )
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET dispatch_token = NULL "  # noqa: S608
                f"WHERE {narrow}dispatch_token = %s RETURNING id",
                [*params, token],
            )
            return sorted(row[0] for row in cursor.fetchall())
    with transaction.atomic():
        batch = Check.objects.select_for_update().filter(dispatch_token=token)
        if ids is not None:
            batch = batch.filter(pk__in=list(ids))
        found = sorted(batch.values_list("pk", flat=True))
        if found:
            Check.objects.filter(pk__in=found, dispatch_token=token).update(dispatch_token=None)
    return found


def _take_batch_checks(token: uuid.UUID | str, ids: Sequence[int] | None) -> list[Check]:
    """take_batch and load_checks in one statement where the database can: the UPDATE that
    clears the token returns the rows it cleared (one round trip and one scan fewer a batch)."""
    if connection.vendor != "postgresql" or ids is None:
        return load_checks(take_batch(token, ids))
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in Check._meta.concrete_fields)
    taken = Check.objects.raw(
        f"UPDATE {Check._meta.db_table} SET dispatch_token = NULL "  # noqa: S608
        f"WHERE id = ANY(%s::bigint[]) AND dispatch_token = %s RETURNING {columns}",
        [_id_array(ids), uuid.UUID(str(token))],
    )
    return with_related(sorted((c for c in taken if c.parent_id is None), key=lambda c: c.pk))


def run_batch(token: uuid.UUID | str, ids: Sequence[int] | None = None) -> list[Outcome]:
    return run_units(_take_batch_checks(token, ids), trigger=CheckResult.Trigger.SCHEDULE)


def request_run(actor: Any, membership: Membership, check: Check) -> uuid.UUID:
    """Ask a worker to run a check now; its result arrives as a "check.ran" event."""
    from . import tasks

    require_role(membership, Membership.Role.ENGINEER)
    if check.project_id != membership.project_id or check.is_step:
        raise ValidationError("Run the suite this step belongs to.")
    if check.probe == Check.Probe.HEARTBEAT:
        raise ValidationError("A heartbeat check is pinged by its job; there is nothing to run.")
    token = uuid.uuid4()
    with transaction.atomic():
        Check.objects.filter(pk=check.pk).update(run_request_token=token)
        actor_id = actor.pk if getattr(actor, "is_authenticated", False) else None
        check_id = check.pk
        transaction.on_commit(lambda: tasks.run_requested.delay(check_id, str(token), actor_id))
    return token


def take_run_request(check_id: int, token: uuid.UUID | str) -> Check | None:
    """The check, if this request is still the open one (and claim it); else None."""
    if not Check.objects.filter(pk=check_id, run_request_token=token).update(
        run_request_token=None
    ):
        return None
    found = load_checks([check_id])
    return found[0] if found else None


# --- Retention ------------------------------------------------------------------------------


def prune(
    now: datetime | None = None, batch: int = 10_000, max_batches: int = 100
) -> dict[str, int]:
    """Delete raw results older than ``result_retention_days()`` and rollups older than
    ROLLUP_RETENTION_DAYS, in bounded batches so a large backlog never holds one long
    transaction."""
    now = now or timezone.now()
    keep_results = result_retention_days()
    deleted = {"results": 0, "rollups": 0}
    plans = [
        (CheckResult, "started_at", now - timedelta(days=keep_results), "results"),
        (CheckRollup, "start", now - timedelta(days=ROLLUP_RETENTION_DAYS), "rollups"),
    ]
    for model, column, cutoff, key in plans:
        for _ in range(max_batches):
            ids = list(
                model.objects.filter(**{f"{column}__lt": cutoff}).values_list("pk", flat=True)[
                    :batch
                ]
            )
            if not ids:
                break
            deleted[key] += model.objects.filter(pk__in=ids).delete()[0]
    Notification.objects.filter(created_at__lt=now - timedelta(days=ROLLUP_RETENTION_DAYS)).delete()
    return deleted


# --- Performance targets --------------------------------------------------------------------


TARGET_FIELDS = ["metric", "target", "alert_threshold", "window_hours"]


def _target_environment(membership: Membership, environment: Environment) -> None:
    require_role(membership, Membership.Role.LEAD)
    if environment.project_id != membership.project_id:
        raise ValidationError("That environment belongs to another project.")


@transaction.atomic
def set_target(
    actor: Any, membership: Membership, environment: Environment, **fields: Any
) -> PerformanceTarget:
    """Create or change the target for one metric of an environment."""
    _target_environment(membership, environment)
    metric = fields.get("metric")
    if metric not in PerformanceTarget.Metric.values:
        raise ValidationError(
            {"metric": f"Choose one of: {', '.join(PerformanceTarget.Metric.values)}."}
        )
    target, _ = PerformanceTarget.objects.select_for_update().get_or_create(
        environment=environment,
        metric=metric,
        defaults={"target": 0, "alert_threshold": 0},
    )
    for key in ("target", "alert_threshold", "window_hours"):
        if key in fields and fields[key] is not None:
            try:
                value = float(fields[key]) if key != "window_hours" else int(fields[key])
            except (TypeError, ValueError):
                raise ValidationError({key: "Give a number."}) from None
            setattr(target, key, value)
    target.full_clean(validate_unique=False, validate_constraints=False)
    target.save()
    events.publish(
        environment.project.topic,
        "environment.target_set",
        project=environment.project_id,
        actor=actor,
        obj=target,
        after={
            "environment": environment.name,
            "metric": target.metric,
            "target": target.target,
            "alert_threshold": target.alert_threshold,
            "window_hours": target.window_hours,
        },
    )
    transaction.on_commit(lambda: evaluate_targets({environment.pk}))
    return target


@transaction.atomic
def delete_target(actor: Any, membership: Membership, target: PerformanceTarget) -> None:
    environment = target.environment
    _target_environment(membership, environment)
    before = {"environment": environment.name, "metric": target.metric}
    target.delete()
    events.publish(
        environment.project.topic,
        "environment.target_removed",
        project=environment.project_id,
        actor=actor,
        before=before,
    )


def _measure(environment_id: int, window_hours: int, now: datetime) -> dict[str, Any]:
    since = _hour(now - timedelta(hours=window_hours))
    return CheckRollup.objects.filter(
        span=CheckRollup.Span.HOUR,
        start__gte=since,
        health_check__environment_id=environment_id,
        health_check__parent__isnull=True,
    ).aggregate(
        runs=Sum("runs"),
        failures=Sum("failures"),
        timed=Sum("latency_count"),
        latency=Sum("latency_sum_ms"),
        slowest=Max("latency_max_ms"),
    )


def target_value(target: PerformanceTarget, measured: dict[str, Any]) -> float | None:
    if target.metric == PerformanceTarget.Metric.ERROR_RATE:
        if not measured["runs"]:
            return None
        return round(100.0 * (measured["failures"] or 0) / measured["runs"], 3)
    if not measured["timed"]:
        return None
    if target.metric == PerformanceTarget.Metric.RESPONSE_TIME_MAX:
        return round(measured["slowest"], 1)
    return round(measured["latency"] / measured["timed"], 1)


def evaluate_targets(
    environment_ids: Iterable[int] | None = None, now: datetime | None = None
) -> list[PerformanceTarget]:
    """Compare each target with its window of rollups; entering or leaving "breached" is one
    event and one notification."""
    now = now or timezone.now()
    targets = PerformanceTarget.objects.select_related("environment", "environment__project")
    if environment_ids is not None:
        targets = targets.filter(environment_id__in=list(environment_ids))
    measured: dict[tuple[int, int], dict[str, Any]] = {}
    changed = []
    for target in targets:
        key = (target.environment_id, target.window_hours)
        if key not in measured:
            measured[key] = _measure(*key, now)
        value = target_value(target, measured[key])
        if value is None:
            new = PerformanceTarget.Status.UNKNOWN
        elif value > target.alert_threshold:
            new = PerformanceTarget.Status.BREACHED
        elif value > target.target:
            new = PerformanceTarget.Status.WARNING
        else:
            new = PerformanceTarget.Status.OK
        with transaction.atomic():
            old = target.status
            won = False
            if new != old:
                won = bool(
                    PerformanceTarget.objects.filter(pk=target.pk, status=old).update(
                        status=new, status_changed_at=now, last_value=value, evaluated_at=now
                    )
                )
            if not won:
                PerformanceTarget.objects.filter(pk=target.pk).update(
                    last_value=value, evaluated_at=now
                )
            target.last_value, target.evaluated_at = value, now
            if won:
                target.status = new
                changed.append(target)
                breached = PerformanceTarget.Status.BREACHED
                if breached in (old, new):
                    _publish_target(target, old, new, value)
    return changed


def _publish_target(target: PerformanceTarget, old: str, new: str, value: float | None) -> None:
    environment = target.environment
    verb = "target.breached" if new == PerformanceTarget.Status.BREACHED else "target.recovered"
    data = {
        "environment": environment.name,
        "metric": target.metric,
        "value": value,
        "target": target.target,
        "alert_threshold": target.alert_threshold,
        "from": old,
        "to": new,
    }
    event = events.publish(
        environment.project.topic,
        verb,
        project=environment.project_id,
        obj=target,
        before={"status": old},
        after={"status": new},
        data=data,
    )
    from . import notify

    notify.queue(
        environment=environment,
        event=verb,
        target=target,
        subject=notify.target_subject(target, new, value),
        text=notify.target_text(target, new, value),
        payload=notify.target_payload(target, old, new, value, event.created_at),
    )


# --- Entry points for other apps ------------------------------------------------------------


@dataclass
class Verification:
    """The answer of ``run_suite_for_environment``."""

    passed: bool
    ran: int
    outcomes: list[Outcome]
    summary: str

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]


def run_suite_for_environment(
    environment: Environment,
    *,
    services: Iterable[Service | str] | None = None,
    include_checks: bool = True,
    trigger: str = CheckResult.Trigger.DEPLOYMENT,
    actor: Any = None,
) -> Verification:
    """Run the environment's enabled smoke suites (and, with ``include_checks``, its enabled
    checks) now, store the results, and say whether everything passed.

    ``services`` limits the run to what belongs to those services plus environment-wide
    suites and checks (no service). With nothing to run the answer is ``passed=True, ran=0``;
    callers that require verification should look at ``ran``. Blocking: call it from a worker.
    """
    units = Check.objects.filter(environment=environment, parent__isnull=True, enabled=True)
    if not include_checks:
        units = units.filter(kind=Check.Kind.SUITE)
    if services is not None:
        names = [s.name if isinstance(s, Service) else s for s in services]
        units = units.filter(service__isnull=True) | units.filter(service__name__in=names)
    checks = load_checks(units.values_list("pk", flat=True))
    outcomes = run_units(checks, trigger=trigger, actor=actor)
    failed = [o for o in outcomes if not o.passed]
    if not outcomes:
        summary = f"No smoke suites or checks are defined for {environment.name}."
    elif failed:
        summary = f"{len(failed)} of {len(outcomes)} failed: " + "; ".join(
            f"{o.check.name}: {o.summary}" for o in failed[:5]
        )
    else:
        summary = f"All {len(outcomes)} passed."
    return Verification(passed=not failed, ran=len(outcomes), outcomes=outcomes, summary=summary)


def run_for_checklist_item(run_item: Any) -> Any:
    """The checklist automation runner for ``{"kind": "check", "check_id": N}``.

    The check must belong to the run's project (an item cannot reach into another project).
    A ``{"kind": "check", "name": "..."}`` item runs the check of that name in the run's
    environment instead, so one template can serve staging and production.
    """
    from releasecenter.automation import AutomationResult

    spec = run_item.item.automation or {}
    run = run_item.run
    checks = Check.objects.filter(project_id=run.project_id, parent__isnull=True)
    if spec.get("check_id") is not None:
        checks = checks.filter(pk=spec["check_id"])
    elif spec.get("name") and run.environment_id:
        checks = checks.filter(name=spec["name"], environment_id=run.environment_id)
    else:
        return AutomationResult(False, 'Give "check_id" (or "name") in the automation.')
    found = load_checks(checks.values_list("pk", flat=True)[:1])
    if not found:
        return AutomationResult(False, "The check of this item does not exist in this project.")
    [outcome] = run_units(found, trigger=CheckResult.Trigger.CHECKLIST)
    check = outcome.check
    summary = f"{check.name} ({check.environment.name}): {'passed' if outcome.passed else 'failed'}"
    summary += f" — {outcome.summary}"
    lines = [summary, f"Started: {outcome.started_at.isoformat()}"]
    if outcome.status_code is not None:
        lines.append(f"HTTP status: {outcome.status_code}")
    if outcome.latency_ms is not None:
        lines.append(f"Latency: {outcome.latency_ms:.1f} ms")
    for detail in outcome.details:
        lines.append(
            f"Step {detail['step']}: {'passed' if detail['passed'] else 'failed'}"
            f" (HTTP {detail['status_code']})"
        )
    for failure in outcome.failures:
        lines.append(f"Failed: {failure['message']}")
    if outcome.excerpt:
        lines += ["", "Response excerpt:", outcome.excerpt]
    return AutomationResult(outcome.passed, summary, "\n".join(lines))
