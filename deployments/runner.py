"""Runs one deployment on a worker: snapshot, then tier by tier apply, wait and verify; on failure
roll back when the environment says so; heartbeat all along; stop when asked.

Ownership. ``run`` claims the job (queued → running) with a conditional update that also hands
out a fencing token. Every later write is conditional on that token, so a redelivered task, or a
worker the reaper declared lost, changes nothing: its writes find another token and it stops.

Writes. The runner keeps the steps in memory and a ``Recorder`` writes their changes, the log
lines and the live events from a thread of its own, batched every ``FLUSH_SECONDS`` in one
transaction that also refreshes the heartbeat (and finds out whether the job is still ours).
Batching is what keeps a 300-service rollout's bookkeeping to a few milliseconds per service;
the short interval is what keeps the page live. Each change carries the moment it happened
(``t``), so the delay until a browser sees it can be measured (bench/bench_deployments.py).

Steps and idempotency. Applying sets a Deployment's image to the release's tag; applying it
twice has one result. Cancelling is honoured between steps, so every step ends in a final state.

Verification. Each tier's verify step asks every service's health endpoint for the new version,
then runs the environment's smoke suites of those services (monitoring's suites; the ones of no
service after the last tier); a failure of either fails the deployment, and auto-rollback
applies. What runs where is recorded as soon as a rollout completes, before verification, so a
deployment stopped later still says truthfully what the cluster runs; the environment page reads
the verify steps to say whether that was verified.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from monitoring import services as monitoring
from monitoring.lib.engine import CheckSpec, run_checks_sync
from monitoring.lib.ssrf import AddressPolicy
from monitoring.models import Check, CheckResult
from releasecenter import events

from .models import (
    DeployedVersion,
    Deployment,
    DeploymentLogLine,
    DeploymentStep,
    DeployTarget,
)
from .services import jobs as job_services
from .strategies import (
    Aborted,
    Outcome,
    ServicePlan,
    Strategy,
    StrategyError,
    build,
)
from .strategies.base import outside_event_loop
from .strategies.kubernetes import tag_for_version

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 0.05
GATHER_SECONDS = 0.01
SWITCH_INTERVAL = 0.001
VERIFY_RETRY_SECONDS = 0.5
VERIFY_REQUEST_SECONDS = 5.0
STEP = DeploymentStep.Status
KIND = DeploymentStep.Kind


class Cancelled(Exception):  # noqa: N818 - control flow
    pass


def _now() -> float:
    return round(time.time(), 4)


def heartbeat_interval() -> float:
    """A quarter of the TTL, so three missed beats in a row still do not look like death."""
    return max(0.2, min(10.0, job_services.heartbeat_ttl_seconds() / 4))


def verification_policy(target: DeployTarget) -> AddressPolicy:
    """What health verification and webhook calls may reach: public addresses and the target's
    allow-list, never this application's own database or Redis.

    Built by monitoring, which knows which of those stores are TCP endpoints at all: a database
    reached through a unix socket has a path for a host, which is no address to refuse.
    """
    try:
        return monitoring.make_policy(target.allow_list())
    except ValueError:
        # Saved allow-lists are validated; one that no longer parses opens nothing extra.
        logger.warning("invalid verify allow-list of environment %s", target.environment_id)
        return monitoring.make_policy(())


# --- Writing ------------------------------------------------------------------------------------


class Recorder:
    """Buffers the runner's writes and flushes them in batches from its own thread.

    Thread-safe: strategies report from their worker threads. Each flush is one transaction:
    the heartbeat (conditional on the fencing token: zero rows means the job was taken away,
    and then nothing else is written), step updates, log lines, what runs where, and one event
    holding every change since the last flush.
    """

    STEP_FIELDS = ["status", "started_at", "finished_at", "message", "detail"]

    def __init__(self, deployment: Deployment, token: int) -> None:
        self.deployment_id = deployment.pk
        self.project_id = deployment.project_id
        self.environment_id = deployment.environment_id
        self.topic = deployment.topic
        self.token = token
        self.lost = False
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._steps: dict[int, dict[str, Any]] = {}
        self._lines: list[dict[str, Any]] = []
        self._changes: list[dict[str, Any]] = []
        self._running: list[dict[str, Any]] = []
        self._fields: dict[str, Any] = {}
        self._seq = (
            DeploymentLogLine.objects.filter(deployment=deployment)
            .order_by("-seq")
            .values_list("seq", flat=True)
            .first()
            or 0
        )
        self._heartbeat_every = heartbeat_interval()
        self._last_write = time.monotonic()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"rc-deployment-{deployment.pk}", daemon=True
        )
        self._thread.start()

    # -- what the runner records --------------------------------------------------------------

    def step(
        self,
        step: DeploymentStep,
        status: str | None = None,
        message: str | None = None,
        facts: dict[str, Any] | None = None,
    ) -> None:
        with self._lock:
            now = timezone.now()
            if status is not None and status != step.status:
                if status not in DeploymentStep.TRANSITIONS[step.status]:
                    raise AssertionError(f"step {step.pk}: {step.status} -> {status}")
                step.status = status
                if status == STEP.RUNNING:
                    step.started_at = now
                if status in DeploymentStep.DONE:
                    step.finished_at = now
                    step.started_at = step.started_at or now
            if message is not None:
                step.message = message[:500]
            if facts:
                step.detail = {**step.detail, **facts}
            self._steps[step.pk] = {f: getattr(step, f) for f in self.STEP_FIELDS}
            self._changes.append(
                {
                    "type": "step",
                    "id": step.pk,
                    "service": step.service_name,
                    "kind": step.kind,
                    "status": step.status,
                    "message": step.message,
                    "t": _now(),
                }
            )
            if message:
                self._line(step, message)
        self._nudge()

    def progress(self, step: DeploymentStep, desired: int, updated: int, available: int) -> None:
        with self._lock:
            step.detail = {
                **step.detail,
                "desired": desired,
                "updated": updated,
                "available": available,
            }
            self._steps[step.pk] = {f: getattr(step, f) for f in self.STEP_FIELDS}
            self._changes.append(
                {
                    "type": "progress",
                    "id": step.pk,
                    "service": step.service_name,
                    "desired": desired,
                    "updated": updated,
                    "available": available,
                    "t": _now(),
                }
            )
        self._nudge()

    def log(self, step: DeploymentStep | None, text: str) -> None:
        with self._lock:
            self._line(step, text)
        self._nudge()

    def running(self, service_id: int | None, version: str, image: str, revision: str) -> None:
        if service_id is None:
            return
        with self._lock:
            self._running.append(
                {"service_id": service_id, "version": version, "image": image, "revision": revision}
            )

    def set_fields(self, **fields: Any) -> None:
        with self._lock:
            self._fields.update(fields)

    def _nudge(self) -> None:
        self._wake.set()
        if self._flush_lock.locked():
            # A flush is being written: let it have the interpreter first, so what the browser
            # waits for is not held up by the job's next change.
            time.sleep(0)

    def _line(self, step: DeploymentStep | None, text: str) -> None:
        self._seq += 1
        text = text[:2000]
        self._lines.append(
            {
                "deployment_id": self.deployment_id,
                "seq": self._seq,
                "step_id": step.pk if step else None,
                "service_name": step.service_name if step else "",
                "at": timezone.now(),
                "text": text,
            }
        )
        self._changes.append(
            {
                "type": "log",
                "seq": self._seq,
                "service": step.service_name if step else "",
                "step": step.pk if step else None,
                "text": text,
                "t": _now(),
            }
        )

    # -- flushing -----------------------------------------------------------------------------

    def check(self) -> None:
        if self.lost:
            raise Aborted("the job was taken from this worker")

    def flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                steps, self._steps = self._steps, {}
                lines, self._lines = self._lines, []
                changes, self._changes = self._changes, []
                running, self._running = self._running, []
                fields, self._fields = self._fields, {}
            if self.lost:
                return
            try:
                with transaction.atomic():
                    if connection.vendor == "postgresql":
                        # Progress is re-sent by the next flush and the job's outcome is written
                        # by a durable transaction of its own; waiting for the WAL flush here
                        # (~20 ms) only delays what the browser sees. A crash of PostgreSQL can
                        # lose the last moment of progress, never consistency.
                        with connection.cursor() as cursor:
                            cursor.execute("SET LOCAL synchronous_commit = off")
                    alive = Deployment.objects.filter(
                        pk=self.deployment_id, fencing_token=self.token
                    ).update(heartbeat_at=timezone.now(), **fields)
                    if not alive:
                        self.lost = True
                        return
                    if steps:
                        self._update_steps(steps)
                    if lines:
                        self._insert_lines(lines)
                    if running:
                        job_services.record_deployed_versions(
                            self.environment_id, self.deployment_id, running
                        )
                    if changes:
                        events.publish(
                            self.topic,
                            "deployment.progress",
                            project=self.project_id,
                            data={"changes": changes},
                        )
            except Exception:
                # Keep what was not written, so the next flush tries again.
                with self._lock:
                    self._steps = {**steps, **self._steps}
                    self._lines = lines + self._lines
                    self._changes = changes + self._changes
                    self._running = running + self._running
                    self._fields = {**fields, **self._fields}
                raise
            self._last_write = time.monotonic()

    def _update_steps(self, steps: dict[int, dict[str, Any]]) -> None:
        """Write the changed steps: on PostgreSQL one statement whose rows come as one JSON
        parameter (UPDATE … FROM jsonb_to_recordset), elsewhere one UPDATE per step.

        QuerySet.bulk_update builds a CASE expression per row and field in Python (~3 ms a step)
        and a VALUES list binds thousands of parameters; a 60-service tier changes hundreds of
        steps at once.
        """
        quote = connection.ops.quote_name
        table = quote(DeploymentStep._meta.db_table)
        if connection.vendor == "postgresql":
            rows = [
                {
                    "id": pk,
                    "status": values["status"],
                    "started_at": values["started_at"].isoformat()
                    if values["started_at"]
                    else None,
                    "finished_at": values["finished_at"].isoformat()
                    if values["finished_at"]
                    else None,
                    "message": values["message"],
                    "detail": values["detail"],
                }
                for pk, values in steps.items()
            ]
            # A constant statement: the data travels as one JSON parameter.
            sql = (
                f"UPDATE {table} AS s SET status = v.status, started_at = v.started_at, "  # noqa: S608
                "finished_at = v.finished_at, message = v.message, detail = v.detail "
                "FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, status varchar, "
                "started_at timestamptz, finished_at timestamptz, message varchar, detail jsonb) "
                "WHERE s.id = v.id"
            )
            with connection.cursor() as cursor:
                cursor.execute(sql, [json.dumps(rows, cls=DjangoJSONEncoder)])
            return
        model_fields = [DeploymentStep._meta.get_field(name) for name in self.STEP_FIELDS]
        assignments = ", ".join(f"{quote(f.column)} = %s" for f in model_fields)
        sql = f"UPDATE {table} SET {assignments} WHERE {quote('id')} = %s"  # noqa: S608
        params = [
            [*(f.get_db_prep_save(values[f.name], connection) for f in model_fields), pk]
            for pk, values in steps.items()
        ]
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)

    def _insert_lines(self, lines: list[dict[str, Any]]) -> None:
        if connection.vendor != "postgresql":
            DeploymentLogLine.objects.bulk_create([DeploymentLogLine(**line) for line in lines])
            return
        table = connection.ops.quote_name(DeploymentLogLine._meta.db_table)
        sql = (
            f"INSERT INTO {table} (deployment_id, seq, step_id, service_name, at, text) "  # noqa: S608
            "SELECT deployment_id, seq, step_id, service_name, at, text FROM "
            "jsonb_to_recordset(%s::jsonb) AS v(deployment_id bigint, seq integer, "
            "step_id bigint, service_name varchar, at timestamptz, text text)"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [json.dumps(lines, cls=DjangoJSONEncoder)])

    def _pending(self) -> bool:
        with self._lock:
            return bool(self._steps or self._lines or self._changes or self._fields)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.wait(FLUSH_SECONDS)
                self._wake.clear()
                # A short pause lets a burst (a tier's patches) go out as one write; whatever
                # arrives while a flush runs goes out with the next, so batches grow with load.
                time.sleep(GATHER_SECONDS if self._pending() else 0)
                due = time.monotonic() - self._last_write >= self._heartbeat_every
                if self._pending() or due:
                    try:
                        self.flush()
                    except Exception:
                        logger.exception("deployment %s: could not record", self.deployment_id)
                if self.lost:
                    return
        finally:
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self.flush()


# --- Running ------------------------------------------------------------------------------------


@dataclass
class Result:
    status: str
    reason: str = ""
    rollback: bool = False


class _Reporter:
    """What a strategy sees of the recorder during one phase of one tier."""

    def __init__(self, recorder: Recorder, steps: dict[str, DeploymentStep], waits: dict) -> None:
        self.recorder = recorder
        self.steps = steps
        self.waits = waits

    def progress(self, plan: ServicePlan, desired: int, updated: int, available: int) -> None:
        self.recorder.progress(self.waits[plan.service_name], desired, updated, available)

    def log(self, plan: ServicePlan | None, text: str) -> None:
        self.recorder.log(self.steps.get(plan.service_name) if plan else None, text)

    def check(self) -> None:
        self.recorder.check()


class Job:
    def __init__(self, deployment: Deployment, token: int, owner: str) -> None:
        self.deployment = deployment
        self.token = token
        self.owner = owner
        self.recorder = Recorder(deployment, token)
        self.steps: dict[tuple[str, str], DeploymentStep] = {
            (s.service_name, s.kind): s
            for s in DeploymentStep.objects.filter(deployment=deployment).select_related("service")
        }
        self.services = {s.service_name: s.service for s in self.steps.values()}

    # -- helpers ----------------------------------------------------------------------------

    def step(self, service: str, kind: str) -> DeploymentStep:
        return self.steps[(service, kind)]

    def checkpoint(self) -> None:
        self.recorder.check()
        cancel = (
            Deployment.objects.filter(pk=self.deployment.pk)
            .values_list("cancel_requested_at", flat=True)
            .first()
        )
        if cancel is not None:
            raise Cancelled()

    def mark(self, plans: Iterable[ServicePlan], kind: str, status: str, message: str = "") -> None:
        for plan in plans:
            step = self.step(plan.service_name, kind)
            if step.status not in DeploymentStep.DONE and step.status != status:
                self.recorder.step(step, status, message or None)

    def record(self, plans: list[ServicePlan], kind: str, outcomes: dict[str, Outcome]) -> list:
        """Record each plan's outcome on its step; the plans that failed."""
        failed = []
        for plan in plans:
            outcome = outcomes.get(plan.service_name) or Outcome(False, "no outcome reported")
            if outcome.facts.get("skipped"):
                status = STEP.SKIPPED
            else:
                status = STEP.SUCCEEDED if outcome.ok else STEP.FAILED
            self.recorder.step(
                self.step(plan.service_name, kind), status, outcome.message, outcome.facts
            )
            if not outcome.ok:
                failed.append((plan, outcome))
        return failed

    def fail_with(self, kind: str, failed: list) -> Result:
        names = ", ".join(plan.service_name for plan, _ in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        first = failed[0][1].message
        return Result(
            Deployment.Status.FAILED,
            f"{KIND(kind).label.lower()} failed for {names}{more}: {first}",
            rollback=True,
        )

    def reporter(self, kind: str, plans: list[ServicePlan]) -> _Reporter:
        steps = {p.service_name: self.step(p.service_name, kind) for p in plans}
        waits = {p.service_name: self.step(p.service_name, KIND.WAIT) for p in plans}
        return _Reporter(self.recorder, steps, waits)

    # -- phases -----------------------------------------------------------------------------

    def plans(self, target: DeployTarget) -> list[ServicePlan]:
        deployment = self.deployment
        undone: dict[str, dict[str, Any]] = {}
        if deployment.kind == Deployment.Kind.ROLLBACK:
            undone = {
                s.service_name: s.detail
                for s in DeploymentStep.objects.filter(
                    deployment_id=deployment.rollback_of_id, kind=KIND.SNAPSHOT
                )
            }
        plans = []
        for (name, kind), step in sorted(self.steps.items(), key=lambda i: (i[1].tier, i[0][0])):
            if kind != KIND.SNAPSHOT:
                continue
            before = undone.get(name, {})
            service = self.services.get(name)
            plans.append(
                ServicePlan(
                    service_name=name,
                    tier=step.tier,
                    target_name=target.deployment_name(name),
                    version=tag_for_version(deployment.version)
                    if deployment.kind == Deployment.Kind.DEPLOY
                    else before.get("version_before", ""),
                    health_url=target.health_url(service) if service is not None else "",
                    undo_to_revision=str(before.get("revision_before") or ""),
                    undo_to_image=before.get("image_before", ""),
                    undo_to_version=before.get("version_before", ""),
                )
            )
        return plans

    def snapshot(self, strategy: Strategy, plans: list[ServicePlan]) -> list:
        # One call covers every service; its steps go from pending straight to their outcome.
        snapshot = strategy.snapshot(plans)
        if snapshot.document:
            name = default_storage.save(
                f"deployments/{self.deployment.project_id}/{self.deployment.pk}/snapshot.yaml",
                ContentFile(snapshot.document.encode()),
            )
            self.recorder.set_fields(snapshot_path=name)
            self.recorder.log(None, f"snapshot of {len(plans)} services stored")
        known = {
            row.service.name: row
            for row in DeployedVersion.objects.filter(
                environment_id=self.deployment.environment_id
            ).select_related("service")
        }
        for plan in plans:
            # Strategies that cannot read the target say nothing of what ran; what Release
            # Center last deployed there is the next best record (and what a rollback restores).
            row = known.get(plan.service_name)
            outcome = snapshot.outcomes.get(plan.service_name)
            if outcome is not None and row is not None:
                outcome.facts.setdefault("version_before", row.version)
                plan.facts.setdefault("version_before", row.version)
        return self.record(plans, KIND.SNAPSHOT, snapshot.outcomes)

    def verify(self, plans: list[ServicePlan], policy: AddressPolicy, timeout: float) -> dict:
        outcomes: dict[str, Outcome] = {}
        pending = {}
        for plan in plans:
            if plan.health_url:
                pending[plan.service_name] = plan
            else:
                outcomes[plan.service_name] = Outcome(
                    True, "no health URL configured; not verified", {"skipped": True}
                )
        deadline = time.monotonic() + timeout
        last_error: dict[str, str] = {}
        while pending:
            remaining = deadline - time.monotonic()
            specs = [
                CheckSpec(
                    id=name,
                    method="GET",
                    url=plan.health_url,
                    timeout_s=max(0.5, min(VERIFY_REQUEST_SECONDS, remaining)),
                    assertions=[
                        {"type": "status", "equals": 200},
                        {"type": "json", "path": "$.status", "op": "equals", "value": "healthy"},
                        {
                            "type": "json",
                            "path": "$.version",
                            "op": "equals",
                            "value": plan.version,
                        },
                    ],
                    policy=policy,
                )
                for name, plan in pending.items()
            ]
            for result in outside_event_loop(lambda specs=specs: run_checks_sync(specs)):
                plan = pending[result.id]
                if result.passed:
                    del pending[result.id]
                    outcomes[result.id] = Outcome(
                        True,
                        f"healthy with version {plan.version} ({result.latency_ms:.0f} ms)",
                        {"verified_version": plan.version},
                    )
                else:
                    error = result.error or "; ".join(f.message for f in result.failures)
                    if last_error.get(result.id) != error:
                        self.recorder.log(
                            self.step(result.id, KIND.VERIFY), f"not yet healthy: {error}"
                        )
                    last_error[result.id] = error
            if not pending or time.monotonic() >= deadline:
                break
            self.recorder.check()
            time.sleep(VERIFY_RETRY_SECONDS)
        for name, plan in pending.items():
            outcomes[name] = Outcome(
                False,
                f"not healthy with version {plan.version} within {timeout:g} s: "
                f"{last_error.get(name, 'no answer')}",
            )
        return outcomes

    def smoke(self, plans: list[ServicePlan], outcomes: dict[str, Outcome], last: bool) -> None:
        """Run the environment's smoke suites as the rest of this tier's verification.

        A suite of a service runs once that service's tier is healthy; a suite of no service
        (the environment as a whole) runs after the last tier, when the whole release is out.
        Each result goes into the log of the verify step it belongs to (the deployment's own
        log for environment-wide suites); a failed suite fails the verification of its
        service, or of every service of the last tier, and so the deployment (and then
        auto-rollback applies, as for a failed health check).

        Only suites: an environment's scheduled checks watch it all the time and answer on the
        Health page; one failing for its own reasons must not block every deployment. Not run for
        a rollback, which restores what ran before whatever the suites, written for the new
        release, expect.
        """
        if self.deployment.kind != Deployment.Kind.DEPLOY:
            return
        names = [plan.service_name for plan in plans]
        scope = Q(service__name__in=names)
        if last:
            scope |= Q(service__isnull=True)
        ids = list(
            Check.objects.filter(
                scope,
                environment_id=self.deployment.environment_id,
                parent__isnull=True,
                enabled=True,
                kind=Check.Kind.SUITE,
            ).values_list("pk", flat=True)
        )
        if not ids:
            return
        if not all(outcomes[name].ok for name in names):
            self.recorder.log(
                None, f"smoke suites not run: tier {plans[0].tier} did not pass its health checks"
            )
            return
        self.recorder.check()
        self.recorder.log(None, f"running {len(ids)} smoke suite{'s' if len(ids) > 1 else ''}")
        try:
            results = monitoring.run_units(
                monitoring.load_checks(ids), trigger=CheckResult.Trigger.DEPLOYMENT
            )
        except Exception as exc:
            logger.exception("deployment %s: smoke suites could not run", self.deployment.pk)
            for name in names:
                outcomes[name] = Outcome(
                    False, f"smoke suites could not run: {type(exc).__name__}: {exc}"
                )
            return
        ran: dict[str, list[dict[str, Any]]] = defaultdict(list)
        failed: dict[str, list[str]] = defaultdict(list)
        for result in results:
            suite = result.check
            owners = [suite.service.name] if suite.service_id else names
            step = self.step(suite.service.name, KIND.VERIFY) if suite.service_id else None
            verdict = "passed" if result.passed else "failed"
            for detail in result.details:
                said = "passed" if detail["passed"] else "failed"
                failure = detail["failures"][0]["message"] if detail["failures"] else ""
                self.recorder.log(
                    step,
                    f"smoke suite '{suite.name}': step '{detail['step']}' {said}"
                    + (f" (HTTP {detail['status_code']})" if detail["status_code"] else "")
                    + (f": {failure}" if failure else ""),
                )
            self.recorder.log(step, f"smoke suite '{suite.name}' {verdict}: {result.summary}")
            for name in owners:
                ran[name].append(
                    {
                        "id": suite.pk,
                        "name": suite.name,
                        "passed": result.passed,
                        "result_id": result.result.pk if result.result is not None else None,
                    }
                )
                if not result.passed:
                    failed[name].append(f"smoke suite '{suite.name}' failed: {result.summary}")
        for name, suites in ran.items():
            before = outcomes[name]
            facts = {k: v for k, v in before.facts.items() if k != "skipped"}
            facts["suites"] = suites
            if failed[name]:
                outcomes[name] = Outcome(False, "; ".join(failed[name]), facts)
                continue
            count = f"{len(suites)} smoke suite{'s' if len(suites) > 1 else ''} passed"
            message = count if before.facts.get("skipped") else f"{before.message}; {count}"
            outcomes[name] = Outcome(True, message, facts)

    def execute(self) -> Result:
        deployment = self.deployment
        target = (
            DeployTarget.objects.select_related("environment")
            .filter(environment_id=deployment.environment_id)
            .first()
        )
        if target is None:
            return Result(Deployment.Status.FAILED, "the environment has no deploy target")
        plans = self.plans(target)
        rollback = deployment.kind == Deployment.Kind.ROLLBACK
        verb = "rolling back" if rollback else f"deploying {deployment.version}"
        self.recorder.log(
            None, f"{verb} to {target.environment.name}: {len(plans)} services ({self.owner})"
        )
        try:
            strategy = build(target, deployment, verification_policy(target))
        except StrategyError as exc:
            return Result(Deployment.Status.FAILED, str(exc))
        try:
            return self._phases(strategy, target, plans, rollback)
        except StrategyError as exc:
            return Result(Deployment.Status.FAILED, str(exc), rollback=True)
        finally:
            strategy.close()

    def _phases(
        self, strategy: Strategy, target: DeployTarget, plans: list[ServicePlan], rollback: bool
    ) -> Result:
        failed = self.snapshot(strategy, plans)
        if failed:
            # Nothing was applied yet: there is nothing to roll back.
            return Result(Deployment.Status.FAILED, self.fail_with(KIND.SNAPSHOT, failed).reason)
        tiers: dict[int, list[ServicePlan]] = defaultdict(list)
        for plan in plans:
            tiers[plan.tier].append(plan)
        order = sorted(tiers, reverse=rollback)
        policy = verification_policy(target)
        for index, tier in enumerate(order):
            tier_plans = tiers[tier]

            def reporter(kind: str, tier_plans: list[ServicePlan] = tier_plans) -> _Reporter:
                return self.reporter(kind, tier_plans)

            self.checkpoint()
            self.recorder.log(None, f"tier {tier}: {', '.join(p.service_name for p in tier_plans)}")
            self.mark(tier_plans, KIND.APPLY, STEP.RUNNING)
            # Written now, from this thread: the previous tier's results and this tier's start
            # go out before the patches' threads start competing for the interpreter.
            self.recorder.flush()
            act: Callable = strategy.undo if rollback else strategy.apply
            failed = self.record(tier_plans, KIND.APPLY, act(tier_plans, reporter(KIND.APPLY)))
            if failed:
                return self.fail_with(KIND.APPLY, failed)
            self.checkpoint()
            self.mark(tier_plans, KIND.WAIT, STEP.RUNNING)
            waited = strategy.wait(
                tier_plans, reporter(KIND.WAIT), float(target.rollout_timeout_seconds)
            )
            failed = self.record(tier_plans, KIND.WAIT, waited)
            # What runs where is what rolled out, verified or not: a deployment cancelled or
            # failed after this point leaves these services on the new version, and the
            # environment page must say so (it marks them unverified from the verify steps).
            for plan in tier_plans:
                if waited.get(plan.service_name) and waited[plan.service_name].ok:
                    service = self.services.get(plan.service_name)
                    self.recorder.running(
                        service.pk if service else None,
                        plan.version,
                        plan.facts.get("image_after", ""),
                        str(plan.facts.get("revision_after") or ""),
                    )
            if failed:
                return self.fail_with(KIND.WAIT, failed)
            if index == len(order) - 1:
                self.recorder.flush()
                job_services.mark_target_deployed(self.deployment.pk, self.token)
            self.checkpoint()
            self.mark(tier_plans, KIND.VERIFY, STEP.RUNNING)
            verified = self.verify(tier_plans, policy, float(target.verify_timeout_seconds))
            self.smoke(tier_plans, verified, last=index == len(order) - 1)
            failed = self.record(tier_plans, KIND.VERIFY, verified)
            if failed:
                return self.fail_with(KIND.VERIFY, failed)
        done = "rolled back" if rollback else f"{self.deployment.version} deployed and verified"
        self.recorder.log(None, f"{done}: {len(plans)} services")
        return Result(Deployment.Status.SUCCEEDED)


def _cancelled_reason(deployment_id: int) -> str:
    row = Deployment.objects.filter(pk=deployment_id).select_related("cancel_requested_by").first()
    who = row.cancel_requested_by.username if row and row.cancel_requested_by else "someone"
    return f"cancelled by {who}"


def execute(deployment: Deployment, token: int, owner: str) -> str:
    """Run a claimed deployment to its end; then, if it failed and the environment rolls back on
    failure, run the rollback too (same worker, a new fencing token of its own)."""
    job = Job(deployment, token, owner)
    try:
        try:
            result = job.execute()
        except Cancelled:
            job.recorder.log(None, "cancelled: stopped after the current step")
            result = Result(Deployment.Status.CANCELLED, _cancelled_reason(deployment.pk))
        except Aborted:
            return "lost"
        except SoftTimeLimitExceeded:
            result = Result(Deployment.Status.FAILED, "the job reached its time limit")
        except Exception as exc:
            logger.exception("deployment %s failed unexpectedly", deployment.pk)
            result = Result(
                Deployment.Status.FAILED, f"internal error: {type(exc).__name__}: {exc}"
            )
    finally:
        job.recorder.close()
    if job.recorder.lost:
        return "lost"
    applied = any(s.kind == KIND.APPLY and s.status == STEP.SUCCEEDED for s in job.steps.values())
    if (
        result.status == Deployment.Status.FAILED
        and result.rollback
        and applied
        and deployment.kind == Deployment.Kind.DEPLOY
        and job_services.auto_rollback_on(deployment)
    ):
        rollback = job_services.start_auto_rollback(deployment.pk, token, owner, result.reason)
        if rollback is not None:
            return f"rolling back: {execute(rollback, rollback.fencing_token, owner)}"
    finished = job_services.finish_run(deployment.pk, token, result.status, result.reason)
    return result.status if finished is not None else "lost"


def run(deployment_id: int, owner: str) -> str:
    """The task's body: claim, then execute. A job that is not queued is left alone."""
    claimed = job_services.claim(deployment_id, owner)
    if claimed is None:
        return "skipped"
    deployment, token = claimed
    # The recorder's thread must get the GIL back quickly after each database round trip, or
    # the job's own CPU work (parsing watch events, health checks) delays every live update by
    # up to the interpreter's switch interval per round trip (5 ms by default, ~8 per flush).
    # A worker runs one job per process at a time, so the setting is the job's for its length.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        return execute(deployment, token, owner)
    finally:
        sys.setswitchinterval(previous)
