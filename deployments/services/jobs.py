"""Deployment jobs: start one (behind the gate), cancel, roll back, configure how an environment is
reached, take CI's reports of external deployments, and reap the jobs whose worker died.

Every verb validates, then changes rows inside a transaction, then publishes events: on the
deployment's topic (``deployment:<id>``, what the deployment page follows) and, for changes of
status, on the project's topic too. The runner (deployments/runner.py) uses ``claim``,
``finish_run`` and ``start_auto_rollback``; each of those is conditional on the fencing token the
runner holds, so a worker that lost its job can no longer change it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from releasecenter import events
from releasecenter.access import require_role
from releasecenter.models import Environment, Membership, Service
from releasecenter.services import Conflict

from ..decision import Decision, Reason
from ..models import (
    DeployedVersion,
    Deployment,
    DeploymentLogLine,
    DeploymentStep,
    DeployTarget,
    EnvironmentPolicy,
    Release,
    ReleaseTarget,
)
from ..strategies import runs_on_worker
from ..strategies.kubernetes import parse_kubeconfig
from .releases import DeployRefused, gate_deployment, refresh_approval, transition

__all__ = [
    "IdempotencyMismatch",
    "auto_rollback_on",
    "claim",
    "finish_run",
    "heartbeat_ttl_seconds",
    "mark_target_deployed",
    "record_deployed_versions",
    "reap_deployments",
    "report_finish",
    "report_start",
    "report_step",
    "request_cancel",
    "request_rollback",
    "save_deploy_target",
    "start_auto_rollback",
    "start_deployment",
]

logger = logging.getLogger(__name__)

D = Deployment.Status
STEP = DeploymentStep.Status
T = ReleaseTarget.Status
MAX_KEY_LENGTH = 200


class IdempotencyMismatch(Exception):  # noqa: N818 - named for what the client did
    """The Idempotency-Key was used before with a different request (answered as 422)."""


def heartbeat_ttl_seconds() -> float:
    """How long a running job may go without a heartbeat before the reaper declares it lost.

    DEPLOYMENT_HEARTBEAT_TTL_SECONDS from settings if a deployment defines it there, else from
    the environment (tests give a worker a short one), else 60.
    """
    value = getattr(settings, "DEPLOYMENT_HEARTBEAT_TTL_SECONDS", None)
    if value is None:
        value = os.environ.get("DEPLOYMENT_HEARTBEAT_TTL_SECONDS", "60")
    try:
        return max(1.0, float(value))
    except (TypeError, ValueError):
        return 60.0


def _now_ts() -> float:
    return round(time.time(), 4)


def _link(deployment: Deployment) -> str:
    return reverse("deployment-detail", args=[deployment.project.slug, deployment.pk])


def _publish_status(
    deployment: Deployment, before: str, actor: Any = None, reason: str = ""
) -> None:
    data = {
        "changes": [
            {
                "type": "status",
                "status": deployment.status,
                "label": deployment.get_status_display(),
                "reason": reason,
                "t": _now_ts(),
            }
        ],
        "deployment": deployment.pk,
        "environment_id": deployment.environment_id,
    }
    events.publish(
        deployment.topic,
        "deployment.status_changed",
        project=deployment.project_id,
        actor=actor,
        obj=deployment,
        before={"status": before},
        after={"status": deployment.status, "reason": reason},
        data=data,
    )
    events.publish(
        f"project:{deployment.project_id}",
        "deployment.status_changed",
        project=deployment.project_id,
        actor=actor,
        obj=deployment,
        data={
            "deployment": deployment.pk,
            "environment_id": deployment.environment_id,
            "status": deployment.status,
            "version": deployment.version,
            "kind": deployment.kind,
        },
    )


def _set_status(
    deployment: Deployment,
    status: str,
    *,
    actor: Any = None,
    reason: str = "",
    token: int | None = None,
    extra: dict[str, Any] | None = None,
) -> bool:
    """Move a deployment along its table with a conditional update; False if someone else did.

    The update is conditional on the status read (and on the fencing token when given), so of
    two writers racing (a worker finishing, the reaper declaring it lost) exactly one wins.
    """
    before = deployment.status
    if not deployment.can_move_to(status):
        raise ValidationError(
            f"Deployment #{deployment.pk} cannot go from {deployment.get_status_display().lower()}"
            f" to {D(status).label.lower()}."
        )
    now = timezone.now()
    changes: dict[str, Any] = {"status": status, "status_changed_at": now, **(extra or {})}
    if reason:
        changes["reason"] = reason[:2000]
    if status == D.RUNNING and deployment.started_at is None:
        changes["started_at"] = now
    if status in Deployment.FINISHED or status == D.ROLLING_BACK:
        # A deployment ends once: a rollback started later (rolling back, then rolled back) is
        # another deployment's work, and must not stretch this one's "ended" and "took".
        if deployment.finished_at is None:
            changes.setdefault("finished_at", now)
        changes["owner"] = ""
    query = Deployment.objects.filter(pk=deployment.pk, status=before)
    if token is not None:
        query = query.filter(fencing_token=token)
    if query.update(**changes) != 1:
        return False
    for key, value in changes.items():
        setattr(deployment, key, value)
    _publish_status(deployment, before, actor, reason)
    return True


def _move_target(
    deployment: Deployment, status: str, actor: Any = None, reason: str = ""
) -> ReleaseTarget | None:
    """Move the release's target in this environment, where the release table allows it."""
    target = (
        ReleaseTarget.objects.select_for_update(of=("self",))
        .select_related("environment", "release__project")
        .filter(release_id=deployment.release_id, environment_id=deployment.environment_id)
        .first()
    )
    if target is None or target.status == status:
        return target
    if not target.can_move_to(status):
        logger.info(
            "release target %s stays %s: cannot move to %s", target.pk, target.status, status
        )
        return target
    if status in (T.DEPLOYED, T.VERIFIED) and target.deployed_commit != deployment.commit_sha:
        # Deployed and verified are claims about the commit this deployment ran.
        target.deployed_commit = deployment.commit_sha
        target.save(update_fields=["deployed_commit"])
    return transition(target, status, actor, reason)


def _finish_steps(deployment: Deployment, status: str, message: str) -> int:
    """Close every step still open, so no step is left 'running' by a job that ended."""
    now = timezone.now()
    running = DeploymentStep.objects.filter(deployment=deployment, status=STEP.RUNNING)
    closed = running.update(
        status=STEP.FAILED if status == STEP.FAILED else STEP.CANCELLED,
        finished_at=now,
        message=message[:500],
    )
    pending = DeploymentStep.objects.filter(deployment=deployment, status=STEP.PENDING)
    closed += pending.update(
        status=STEP.CANCELLED if status == STEP.CANCELLED else STEP.SKIPPED,
        finished_at=now,
        message=message[:500],
    )
    return closed


# --- Configuring the target of an environment ------------------------------------------------

TARGET_FIELDS = [
    "strategy",
    "api_url",
    "ca_certificate",
    "verify_tls",
    "namespace",
    "deployment_names",
    "health_url_template",
    "verify_allow_list",
    "verify_timeout_seconds",
    "rollout_timeout_seconds",
    "webhook_url",
    "webhook_status_url",
]
SECRET_FIELDS = ["bearer_token", "kubeconfig", "webhook_secret"]


def _describe_target(target: DeployTarget) -> dict[str, Any]:
    """What may be recorded and shown: settings, and for secrets only whether they are set."""
    described = {f: getattr(target, f) for f in TARGET_FIELDS}
    described.update({f: "set" if getattr(target, f) else "not set" for f in SECRET_FIELDS})
    return described


@transaction.atomic
def save_deploy_target(
    actor,  # noqa: ANN001
    membership: Membership,
    environment: Environment,
    *,
    clear_secrets: list[str] | None = None,
    **fields: Any,
) -> DeployTarget:
    """Create or change how deployments reach an environment (admins only).

    A secret given as "" or None keeps the stored one; name it in ``clear_secrets`` to remove it.
    Secrets are never part of the recorded event, only whether each is set.
    """
    require_role(membership, Membership.Role.ADMIN)
    if environment.project_id != membership.project_id:
        raise ValidationError("That environment is not in this project.")
    target, _ = DeployTarget.objects.select_for_update().get_or_create(environment=environment)
    before = _describe_target(target)
    for key, value in fields.items():
        if key in TARGET_FIELDS and value is not None:
            setattr(target, key, value.strip() if isinstance(value, str) else value)
        elif key in SECRET_FIELDS and value:
            setattr(target, key, value.strip() + ("\n" if key == "kubeconfig" else ""))
    for key in clear_secrets or []:
        if key in SECRET_FIELDS:
            setattr(target, key, "")
    if target.kubeconfig:
        try:
            parse_kubeconfig(target.kubeconfig)
        except ValueError as exc:
            raise ValidationError({"kubeconfig": str(exc)}) from None
    if target.strategy == DeployTarget.Strategy.KUBERNETES:
        if not (target.api_url or target.kubeconfig):
            raise ValidationError({"api_url": "Give the API URL, or a kubeconfig."})
        if not target.namespace:
            raise ValidationError({"namespace": "Give the namespace of the Deployments."})
    if target.strategy == DeployTarget.Strategy.WEBHOOK:
        if not target.webhook_url:
            raise ValidationError({"webhook_url": "Give the URL to POST deployments to."})
        if not target.webhook_secret:
            raise ValidationError({"webhook_secret": "Give a secret to sign requests with."})
    from monitoring.lib.ssrf import AddressPolicy

    try:
        AddressPolicy(allow=target.allow_list())
    except ValueError as exc:
        raise ValidationError({"verify_allow_list": str(exc)}) from None
    target.updated_at = timezone.now()
    target.updated_by = actor
    target.full_clean(exclude=["environment"])
    target.save()
    events.publish(
        environment.project.topic,
        "environment.deploy_target_saved",
        project=environment.project_id,
        actor=actor,
        obj=target,
        before=before,
        after=_describe_target(target),
        data={"environment": environment.name},
    )
    return target


# --- Starting a deployment ---------------------------------------------------------------------


def _fingerprint(**request: Any) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def _replay(actor, key: str, fingerprint: str) -> Deployment | None:  # noqa: ANN001
    existing = (
        Deployment.objects.select_related("project")
        .filter(requested_by=actor, idempotency_key=key)
        .first()
    )
    if existing is None:
        return None
    if existing.idempotency_fingerprint != fingerprint:
        raise IdempotencyMismatch(
            "This Idempotency-Key was used for a different request; use a new key for a new "
            "deployment."
        )
    return existing


def _busy(environment: Environment) -> DeployRefused | Conflict:
    active = (
        Deployment.objects.select_related("project", "requested_by")
        .filter(environment=environment, status__in=Deployment.ACTIVE)
        .first()
    )
    if active is None:
        return Conflict("Another deployment started at the same moment; try again.")
    by = f" by {active.requested_by.username}" if active.requested_by else ""
    message = (
        f"Deployment #{active.pk} ({active.get_kind_display().lower()} {active.version}{by}) is "
        f"{active.get_status_display().lower()} in {environment.name}; one deployment per "
        "environment at a time."
    )
    return DeployRefused(Decision("no-go", (Reason("deployment_active", message, _link(active)),)))


class _Collision(Exception):
    pass


def _create_steps(deployment: Deployment, services: list[tuple[Service | None, str, int]]) -> None:
    DeploymentStep.objects.bulk_create(
        [
            DeploymentStep(
                deployment=deployment,
                service=service,
                service_name=name,
                tier=tier,
                kind=kind,
            )
            for service, name, tier in services
            for kind in DeploymentStep.ORDER
        ]
    )


def _decision_snapshot(
    decision: Decision, commit_sha: str, at: datetime, override: Any
) -> dict[str, Any]:
    """The decision a deployment started on, kept with it as it was (the compliance bundle
    shows it): what was "no" and who went ahead anyway is not re-derived later."""
    return {
        **decision.as_dict(),
        "at": at.isoformat(),
        "commit": commit_sha,
        "overridden": override is not None,
        "override_reason": override.reason if override is not None else "",
    }


def _enqueue(deployment: Deployment) -> None:
    if not runs_on_worker(deployment.strategy):
        return
    from ..tasks import run_deployment

    deployment_id = deployment.pk
    transaction.on_commit(lambda: run_deployment.delay(deployment_id))


def start_deployment(
    actor,  # noqa: ANN001
    membership: Membership,
    release: Release,
    environment: Environment,
    *,
    override_reason: str = "",
    idempotency_key: str = "",
    expected_commit: str | None = None,
) -> tuple[Deployment, bool]:
    """Ask the gate, then record a queued deployment and hand it to a worker.

    Returns (deployment, created); created is False for a replay of the same Idempotency-Key.
    Raises DeployRefused (with reasons: the go/no-go decision's, or another deployment active in
    the environment), Conflict, IdempotencyMismatch, ValidationError or PermissionDenied.
    """
    require_role(membership, Membership.Role.ENGINEER)
    project = membership.project
    if release.project_id != project.pk or environment.project_id != project.pk:
        raise ValidationError("The release and the environment must be of this project.")
    idempotency_key = (idempotency_key or "").strip()
    if len(idempotency_key) > MAX_KEY_LENGTH or not idempotency_key.isprintable():
        raise ValidationError({"idempotency_key": "An Idempotency-Key is 1 to 200 characters."})
    override_reason = (override_reason or "").strip()
    fingerprint = _fingerprint(
        release=release.pk,
        environment=environment.name,
        override_reason=override_reason,
        expected_commit=expected_commit,
    )
    if idempotency_key:
        existing = _replay(actor, idempotency_key, fingerprint)
        if existing is not None:
            return existing, False
    target = DeployTarget.objects.filter(environment=environment).first()
    if target is None:
        raise ValidationError(
            f"{environment.name} has no deploy target yet: an admin sets one on the environment "
            "page."
        )
    if not ReleaseTarget.objects.filter(release=release, environment=environment).exists():
        raise ValidationError(
            {"environment": f"Release {release.version} does not target {environment.name}."}
        )
    services = list(project.services.order_by("tier", "name"))
    if not services:
        raise ValidationError("The project has no services to deploy.")
    try:
        with transaction.atomic():
            # Serialise requests for one release, so a replayed key sees the first request's row.
            commit_sha = (
                Release.objects.select_for_update()
                .values_list("commit_sha", flat=True)
                .get(pk=release.pk)
            )
            if idempotency_key:
                existing = _replay(actor, idempotency_key, fingerprint)
                if existing is not None:
                    return existing, False
            decision, override = gate_deployment(
                actor,
                membership,
                release,
                environment,
                override_reason=override_reason,
                expected_commit=expected_commit,
            )
            previous = (
                Deployment.objects.filter(environment=environment, status=D.SUCCEEDED)
                .order_by("-id")
                .first()
            )
            now = timezone.now()
            try:
                with transaction.atomic():
                    deployment = Deployment.objects.create(
                        project=project,
                        release=release,
                        environment=environment,
                        kind=Deployment.Kind.DEPLOY,
                        strategy=target.strategy,
                        version=release.version,
                        commit_sha=commit_sha,
                        decision_snapshot=_decision_snapshot(decision, commit_sha, now, override),
                        requested_by=actor,
                        override=override,
                        replaces=previous,
                        created_at=now,
                        status_changed_at=now,
                        enqueued_at=now,
                        idempotency_key=idempotency_key,
                        idempotency_fingerprint=fingerprint if idempotency_key else "",
                    )
            except IntegrityError as exc:
                raise _Collision from exc
            _create_steps(deployment, [(s, s.name, s.tier) for s in services])
            release_target = (
                ReleaseTarget.objects.select_for_update(of=("self",))
                .select_related("environment", "release__project")
                .get(release=release, environment=environment)
            )
            transition(
                release_target, T.DEPLOYING, actor, reason=f"deployment #{deployment.pk} started"
            )
            events.publish(
                deployment.topic,
                "deployment.created",
                project=project,
                actor=actor,
                obj=deployment,
                after={
                    "release": release.version,
                    "environment": environment.name,
                    "strategy": deployment.strategy,
                    "override": override.pk if override else None,
                },
                data={"changes": [{"type": "status", "status": D.QUEUED, "t": _now_ts()}]},
            )
            events.publish(
                project.topic,
                "deployment.created",
                project=project,
                actor=actor,
                obj=deployment,
                data={
                    "deployment": deployment.pk,
                    "environment_id": environment.pk,
                    "version": release.version,
                },
            )
            _enqueue(deployment)
    except _Collision:
        if idempotency_key:
            existing = _replay(actor, idempotency_key, fingerprint)
            if existing is not None:
                return existing, False
        raise _busy(environment) from None
    return deployment, True


# --- Cancelling --------------------------------------------------------------------------------


def request_cancel(actor, membership: Membership, deployment: Deployment) -> Deployment:  # noqa: ANN001
    """Stop a deployment. A queued one is cancelled at once; a running one stops after the step
    it is in, leaving every step finished (the worker checks between steps)."""
    require_role(membership, Membership.Role.ENGINEER)
    with transaction.atomic():
        deployment = (
            Deployment.objects.select_for_update(of=("self",))
            .select_related("project", "environment")
            .get(pk=deployment.pk, project=membership.project)
        )
        if deployment.status == D.QUEUED or (
            deployment.status == D.RUNNING and not runs_on_worker(deployment.strategy)
        ):
            reason = f"cancelled by {actor.username}"
            if _set_status(deployment, D.CANCELLED, actor=actor, reason=reason):
                _finish_steps(deployment, STEP.CANCELLED, reason)
                _after_finish(deployment, actor)
            return deployment
        if deployment.status != D.RUNNING:
            raise ValidationError(
                f"Deployment #{deployment.pk} is {deployment.get_status_display().lower()}; "
                "only a queued or running deployment can be cancelled."
            )
        if deployment.cancel_requested_at is not None:
            return deployment
        deployment.cancel_requested_at = timezone.now()
        deployment.cancel_requested_by = actor
        deployment.save(update_fields=["cancel_requested_at", "cancel_requested_by"])
        events.publish(
            deployment.topic,
            "deployment.cancel_requested",
            project=deployment.project_id,
            actor=actor,
            obj=deployment,
            data={
                "changes": [
                    {
                        "type": "log",
                        "text": f"{actor.username} asked to cancel; stopping after the current "
                        "step.",
                        "t": _now_ts(),
                    }
                ]
            },
        )
    return deployment


# --- Rolling back ------------------------------------------------------------------------------


def _applied_steps(deployment: Deployment) -> list[DeploymentStep]:
    """The apply steps that may have changed the cluster: every one that started, not only those
    recorded as succeeded. A worker killed after its patch reached the cluster but before it
    recorded the answer leaves the step running (the reaper then fails it), and the service runs
    the new image while the database says the old one (drills/kill_deployment_worker.py).
    Rolling back a service the patch never reached restores the image it still runs."""
    return list(
        DeploymentStep.objects.filter(
            Q(status=STEP.SUCCEEDED) | Q(started_at__isnull=False),
            deployment=deployment,
            kind=DeploymentStep.Kind.APPLY,
        ).select_related("service")
    )


def _restored_version(deployment: Deployment, service_names: list[str]) -> str:
    """The version label of the rollback of ``deployment``: what its snapshot found running on
    the services it changed (what the rollback restores), when they all ran one version."""
    found = {
        version
        for version in DeploymentStep.objects.filter(
            deployment=deployment,
            kind=DeploymentStep.Kind.SNAPSHOT,
            service_name__in=service_names,
        ).values_list("detail__version_before", flat=True)
        if version
    }
    if len(found) == 1:
        return str(found.pop())[:64]
    if not found and deployment.replaces_id:
        return deployment.replaces.version
    # Several versions, or none known (a strategy that cannot read its target, and nothing
    # recorded): say what is restored instead of naming a version.
    return f"as before #{deployment.pk}"


def _create_rollback(
    deployment: Deployment, actor: Any, reason: str, *, owner: str = "", running: bool = False
) -> Deployment:
    """Insert the rollback deployment of ``deployment`` (inside the caller's transaction)."""
    applied = _applied_steps(deployment)
    now = timezone.now()
    restored = _restored_version(deployment, [s.service_name for s in applied])
    fields: dict[str, Any] = {
        "project_id": deployment.project_id,
        "release_id": deployment.release_id,
        "environment_id": deployment.environment_id,
        "kind": Deployment.Kind.ROLLBACK,
        "strategy": deployment.strategy,
        "version": restored,
        "commit_sha": deployment.replaces.commit_sha if deployment.replaces_id else "",
        "requested_by": actor if getattr(actor, "is_authenticated", False) else None,
        "rollback_of": deployment,
        "reason": reason[:2000],
        "created_at": now,
        "status_changed_at": now,
        "enqueued_at": now,
    }
    if running:
        fields.update(
            status=D.RUNNING, started_at=now, owner=owner, heartbeat_at=now, fencing_token=1
        )
    try:
        with transaction.atomic():
            rollback = Deployment.objects.create(**fields)
    except IntegrityError as exc:
        raise _Collision from exc
    _create_steps(rollback, [(s.service, s.service_name, s.tier) for s in applied])
    events.publish(
        rollback.topic,
        "deployment.created",
        project=rollback.project_id,
        actor=fields["requested_by"],
        obj=rollback,
        after={"rollback_of": deployment.pk, "reason": reason},
        data={"changes": [{"type": "status", "status": rollback.status, "t": _now_ts()}]},
    )
    return rollback


def request_rollback(
    actor,  # noqa: ANN001
    membership: Membership,
    deployment: Deployment,
    reason: str = "",
) -> Deployment:
    """Undo a finished deployment: a new deployment of kind rollback that restores, service by
    service, what ran before it (for Kubernetes, the previous ReplicaSet's pod template).

    Not gated by the go/no-go decision on purpose: a rollback restores what ran before, and
    on-call must be able to do it during an incident or a freeze. One active deployment per
    environment still holds.
    """
    require_role(membership, Membership.Role.ENGINEER)
    reason = (reason or "").strip() or f"rolled back by {actor.username}"
    try:
        with transaction.atomic():
            deployment = (
                Deployment.objects.select_for_update(of=("self",))
                .select_related("project", "environment", "replaces")
                .get(pk=deployment.pk, project=membership.project)
            )
            if deployment.kind != Deployment.Kind.DEPLOY:
                raise ValidationError("A rollback is undone by deploying again, not rolled back.")
            if not runs_on_worker(deployment.strategy):
                raise ValidationError(
                    "External deployments are rolled back by the pipeline that ran them."
                )
            if deployment.status not in (D.SUCCEEDED, D.FAILED, D.CANCELLED):
                raise ValidationError(
                    f"Deployment #{deployment.pk} is {deployment.get_status_display().lower()}; "
                    "only a finished deployment can be rolled back."
                )
            if not _applied_steps(deployment):
                raise ValidationError(
                    f"Deployment #{deployment.pk} changed no service; there is nothing to undo."
                )
            later = (
                Deployment.objects.filter(
                    environment=deployment.environment,
                    kind=Deployment.Kind.DEPLOY,
                    id__gt=deployment.pk,
                    steps__kind=DeploymentStep.Kind.APPLY,
                    steps__status=STEP.SUCCEEDED,
                )
                .order_by("id")
                .first()
            )
            if later is not None:
                raise ValidationError(
                    f"Deployment #{later.pk} ({later.version}) came after #{deployment.pk}; roll "
                    "back the latest deployment of the environment."
                )
            rollback = _create_rollback(deployment, actor, reason)
            _set_status(deployment, D.ROLLING_BACK, actor=actor, reason=reason)
            _enqueue(rollback)
    except _Collision:
        raise _busy(deployment.environment) from None
    return rollback


def start_auto_rollback(
    deployment_id: int, token: int, owner: str, reason: str
) -> Deployment | None:
    """The runner found the deployment failed and the environment rolls back automatically:
    record the rollback as a new deployment owned by the same worker (fencing token 1) and mark
    this one rolling back. None if the job is no longer this worker's."""
    with transaction.atomic():
        deployment = (
            Deployment.objects.select_for_update(of=("self",))
            .select_related("project", "environment", "replaces")
            .filter(pk=deployment_id, fencing_token=token, status=D.RUNNING)
            .first()
        )
        if deployment is None:
            return None
        _finish_steps(deployment, STEP.SKIPPED, "not run: the deployment is rolling back")
        if not _set_status(deployment, D.ROLLING_BACK, reason=reason, token=token):
            return None
        try:
            with transaction.atomic():
                rollback = _create_rollback(
                    deployment, None, f"automatic rollback: {reason}", owner=owner, running=True
                )
        except _Collision:
            # Cannot happen while this job held the environment, but never leave it half-done.
            _set_status(deployment, D.FAILED, reason=f"{reason}; the rollback could not start")
            _after_finish(deployment, None)
            return None
    return rollback


def auto_rollback_on(deployment: Deployment) -> bool:
    return bool(
        EnvironmentPolicy.objects.filter(environment_id=deployment.environment_id)
        .values_list("auto_rollback", flat=True)
        .first()
    )


# --- The runner's side -------------------------------------------------------------------------


def claim(deployment_id: int, owner: str) -> tuple[Deployment, int] | None:
    """Take a queued deployment for this worker: (deployment, fencing token), or None when it is
    finished, cancelled, or already owned (a redelivered task then does nothing)."""
    with transaction.atomic():
        now = timezone.now()
        claimed = (
            Deployment.objects.filter(pk=deployment_id, status=D.QUEUED)
            .exclude(strategy=DeployTarget.Strategy.EXTERNAL)
            .update(
                status=D.RUNNING,
                owner=owner[:200],
                fencing_token=F("fencing_token") + 1,
                heartbeat_at=now,
                started_at=now,
                status_changed_at=now,
            )
        )
        if claimed != 1:
            return None
        deployment = Deployment.objects.select_related("project").get(pk=deployment_id)
        _publish_status(deployment, D.QUEUED, reason=f"taken by worker {owner}")
    return deployment, deployment.fencing_token


def mark_target_deployed(deployment_id: int, token: int) -> None:
    """The last tier rolled out: the release counts as deployed here (verified comes after)."""
    with transaction.atomic():
        deployment = (
            Deployment.objects.select_related("project")
            .filter(pk=deployment_id, fencing_token=token, status=D.RUNNING)
            .first()
        )
        if deployment is not None and deployment.kind == Deployment.Kind.DEPLOY:
            _move_target(deployment, T.DEPLOYED, deployment.requested_by, f"#{deployment.pk}")


def record_deployed_versions(
    environment_id: int, deployment_id: int | None, running: list[dict[str, Any]]
) -> None:
    """Upsert what runs where: [{"service_id", "version", "image", "revision"}]. The 'since' of a
    service moves only when its version or image changes; the deployment is always the latest
    that rolled it out, so the environment page judges verification by that deployment's steps
    (a redeploy of the same version that verifies clears an earlier, unverified one)."""
    if not running:
        return
    now = timezone.now()
    if connection.vendor == "postgresql":
        # One statement for a whole tier; the runner calls this inside its progress flush.
        rows = [
            {
                "environment_id": environment_id,
                "service_id": item["service_id"],
                "version": item["version"],
                "image": item.get("image") or "",
                "revision": str(item.get("revision") or ""),
                "since": now.isoformat(),
                "deployment_id": deployment_id,
            }
            for item in running
        ]
        table = connection.ops.quote_name(DeployedVersion._meta.db_table)
        sql = (
            f"INSERT INTO {table} AS d (environment_id, service_id, version, image, revision, "  # noqa: S608
            "since, deployment_id) SELECT environment_id, service_id, version, image, revision, "
            "since, deployment_id FROM jsonb_to_recordset(%s::jsonb) AS v(environment_id bigint, "
            "service_id bigint, version varchar, image varchar, revision varchar, "
            "since timestamptz, deployment_id bigint) "
            "ON CONFLICT (environment_id, service_id) DO UPDATE SET version = EXCLUDED.version, "
            "image = EXCLUDED.image, revision = EXCLUDED.revision, since = CASE WHEN "
            "(d.version, d.image) IS DISTINCT FROM (EXCLUDED.version, EXCLUDED.image) "
            "THEN EXCLUDED.since ELSE d.since END, deployment_id = EXCLUDED.deployment_id "
            "WHERE (d.version, d.image, d.revision, d.deployment_id) IS DISTINCT FROM "
            "(EXCLUDED.version, EXCLUDED.image, EXCLUDED.revision, EXCLUDED.deployment_id)"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [json.dumps(rows)])
        return
    existing = {
        row.service_id: row
        for row in DeployedVersion.objects.filter(
            environment_id=environment_id, service_id__in=[r["service_id"] for r in running]
        )
    }
    new, changed = [], []
    for item in running:
        row = existing.get(item["service_id"])
        image = item.get("image") or ""
        if row is None:
            new.append(
                DeployedVersion(
                    environment_id=environment_id,
                    service_id=item["service_id"],
                    version=item["version"],
                    image=image,
                    revision=str(item.get("revision") or ""),
                    since=now,
                    deployment_id=deployment_id,
                )
            )
        else:
            revision = str(item.get("revision") or "")
            moved = (row.version, row.image) != (item["version"], image)
            if not moved and (row.revision, row.deployment_id) == (revision, deployment_id):
                continue
            if moved:
                row.since = now
            row.version, row.image, row.revision = item["version"], image, revision
            row.deployment_id = deployment_id
            changed.append(row)
    DeployedVersion.objects.bulk_create(new, ignore_conflicts=True)
    if changed:
        DeployedVersion.objects.bulk_update(
            changed, ["version", "image", "revision", "since", "deployment"]
        )


def finish_run(deployment_id: int, token: int, status: str, reason: str = "") -> Deployment | None:
    """The runner is done: record the outcome (conditional on its token) and move the release.

    None when the job was no longer this worker's (the reaper took it): nothing is written.
    """
    with transaction.atomic():
        deployment = (
            Deployment.objects.select_for_update(of=("self",))
            .select_related("project", "environment", "requested_by", "rollback_of")
            .filter(pk=deployment_id, fencing_token=token)
            .first()
        )
        if deployment is None or deployment.status != D.RUNNING:
            return None
        closing = {
            D.SUCCEEDED: STEP.SKIPPED,
            D.CANCELLED: STEP.CANCELLED,
        }.get(status, STEP.FAILED)
        _finish_steps(deployment, closing, reason or f"deployment {status}")
        if not _set_status(deployment, status, reason=reason, token=token):
            return None
        _after_finish(deployment, None)
    return deployment


def _after_finish(deployment: Deployment, actor: Any) -> None:
    """Consequences of a finished deployment for the release, and of a rollback for the
    deployment it undid."""
    by = deployment.requested_by if deployment.requested_by_id else actor
    note = f"deployment #{deployment.pk} {deployment.get_status_display().lower()}"
    if deployment.reason:
        note += f": {deployment.reason}"
    if deployment.kind == Deployment.Kind.DEPLOY:
        if deployment.status == D.SUCCEEDED:
            _move_target(deployment, T.DEPLOYED, by, note)
            _move_target(deployment, T.VERIFIED, by, note)
        elif deployment.status == D.FAILED:
            _move_target(deployment, T.FAILED, by, note)
        elif deployment.status == D.CANCELLED:
            # Back to review, not 'cancelled' (that would end the release here for good).
            target = _move_target(deployment, T.IN_REVIEW, by, note)
            if target is not None:
                refresh_approval(target, by)
        return
    undone = (
        Deployment.objects.select_for_update(of=("self",))
        .select_related("project", "environment")
        .filter(pk=deployment.rollback_of_id, status=D.ROLLING_BACK)
        .first()
    )
    if undone is None:
        return
    if deployment.status == D.SUCCEEDED:
        _set_status(undone, D.ROLLED_BACK, actor=by, reason=f"rolled back by #{deployment.pk}")
        _move_target(undone, T.ROLLED_BACK, by, f"rolled back by deployment #{deployment.pk}")
    else:
        _set_status(
            undone,
            D.FAILED,
            actor=by,
            reason=f"rollback #{deployment.pk} {deployment.get_status_display().lower()}"
            + (f": {deployment.reason}" if deployment.reason else ""),
        )
        _move_target(undone, T.FAILED, by, f"rollback #{deployment.pk} did not complete")


# --- The reaper --------------------------------------------------------------------------------


def _declare_lost(deployment_id: int, cutoff: datetime, reason: str) -> Deployment | None:
    with transaction.atomic():
        deployment = (
            Deployment.objects.select_for_update(of=("self",))
            .select_related("project", "environment", "requested_by", "replaces")
            .filter(pk=deployment_id, status=D.RUNNING, heartbeat_at__lt=cutoff)
            .first()
        )
        if deployment is None:
            return None
        # A new token first: whatever the lost worker still tries to write is refused.
        Deployment.objects.filter(pk=deployment.pk).update(fencing_token=F("fencing_token") + 1)
        _finish_steps(deployment, STEP.FAILED, reason)
        DeploymentLogLine.objects.create(
            deployment=deployment,
            seq=(deployment.log_lines.order_by("-seq").values_list("seq", flat=True).first() or 0)
            + 1,
            text=f"{reason}: no heartbeat since {deployment.heartbeat_at:%H:%M:%S}",
        )
        if not _set_status(deployment, D.FAILED, reason=reason):
            return None
        _after_finish(deployment, None)
        if (
            deployment.kind == Deployment.Kind.DEPLOY
            and runs_on_worker(deployment.strategy)
            and auto_rollback_on(deployment)
            and _applied_steps(deployment)
        ):
            try:
                with transaction.atomic():
                    rollback = _create_rollback(deployment, None, f"automatic rollback: {reason}")
                    _set_status(deployment, D.ROLLING_BACK, reason=f"{reason}; rolling back")
                    _enqueue(rollback)
            except _Collision:
                logger.warning(
                    "deployment %s: no automatic rollback, the environment is busy", deployment.pk
                )
    return deployment


def reap_deployments(now: datetime | None = None) -> dict[str, int]:
    """Fail running deployments whose worker stopped heartbeating; hand queued ones whose
    message may have been lost back to the workers (running a job twice is harmless)."""
    now = now or timezone.now()
    ttl = timedelta(seconds=heartbeat_ttl_seconds())
    counts = {"lost": 0, "silent": 0, "requeued": 0}
    cutoff = now - ttl
    worker_run = ~Q(strategy=DeployTarget.Strategy.EXTERNAL)
    for pk in Deployment.objects.filter(
        worker_run, status=D.RUNNING, heartbeat_at__lt=cutoff
    ).values_list("pk", flat=True):
        if _declare_lost(pk, cutoff, "worker lost"):
            counts["lost"] += 1
    silent_cutoff = now - timedelta(seconds=settings.LONGEST_JOB_SECONDS)
    for pk in Deployment.objects.filter(
        strategy=DeployTarget.Strategy.EXTERNAL, status=D.RUNNING, heartbeat_at__lt=silent_cutoff
    ).values_list("pk", flat=True):
        if _declare_lost(pk, silent_cutoff, "no report from CI"):
            counts["silent"] += 1
    requeue_cutoff = now - max(timedelta(minutes=2), 2 * ttl)
    for deployment in Deployment.objects.filter(
        worker_run, status=D.QUEUED, enqueued_at__lt=requeue_cutoff
    ):
        with transaction.atomic():
            if Deployment.objects.filter(
                pk=deployment.pk, status=D.QUEUED, enqueued_at=deployment.enqueued_at
            ).update(enqueued_at=now):
                _enqueue(deployment)
                counts["requeued"] += 1
    return counts


# --- External deployments, reported by CI ------------------------------------------------------


def _external(actor, membership: Membership, deployment: Deployment) -> Deployment:  # noqa: ANN001
    require_role(membership, Membership.Role.ENGINEER)
    deployment = (
        Deployment.objects.select_for_update(of=("self",))
        .select_related("project", "environment", "requested_by")
        .get(pk=deployment.pk, project=membership.project)
    )
    if deployment.strategy != DeployTarget.Strategy.EXTERNAL:
        raise ValidationError("Only external deployments are reported through the API.")
    return deployment


@transaction.atomic
def report_start(actor, membership: Membership, deployment: Deployment) -> Deployment:  # noqa: ANN001
    deployment = _external(actor, membership, deployment)
    if deployment.status == D.RUNNING:
        return deployment
    if deployment.status != D.QUEUED:
        raise Conflict(f"Deployment #{deployment.pk} is {deployment.get_status_display().lower()}.")
    deployment.heartbeat_at = timezone.now()
    deployment.save(update_fields=["heartbeat_at"])
    _set_status(deployment, D.RUNNING, actor=actor, reason=f"started by {actor.username} (CI)")
    return deployment


@transaction.atomic
def report_step(
    actor,  # noqa: ANN001
    membership: Membership,
    deployment: Deployment,
    *,
    service: str,
    kind: str,
    status: str,
    log: list[str] | None = None,
    progress: dict[str, int] | None = None,
    message: str = "",
) -> DeploymentStep:
    deployment = _external(actor, membership, deployment)
    if deployment.status != D.RUNNING:
        raise Conflict(
            f"Deployment #{deployment.pk} is {deployment.get_status_display().lower()}; report "
            "start first, and nothing after finish."
        )
    step = (
        DeploymentStep.objects.select_for_update()
        .filter(deployment=deployment, service_name=service, kind=kind)
        .first()
    )
    if step is None:
        raise ValidationError({"service": f"No {kind} step for a service '{service}'."})
    if status != step.status and status not in DeploymentStep.TRANSITIONS[step.status]:
        raise Conflict(f"The {kind} step of {service} cannot go from {step.status} to {status}.")
    now = timezone.now()
    changes: list[dict[str, Any]] = []
    fields = []
    if status != step.status:
        step.status = status
        fields.append("status")
        if status == STEP.RUNNING and step.started_at is None:
            step.started_at = now
            fields.append("started_at")
        if status in DeploymentStep.DONE:
            step.finished_at = now
            fields.append("finished_at")
    if message:
        step.message = message[:500]
        fields.append("message")
    if progress:
        counts = {k: int(progress.get(k) or 0) for k in ("desired", "updated", "available")}
        step.detail = {**step.detail, **counts}
        fields.append("detail")
        changes.append(
            {"type": "progress", "id": step.pk, "service": service, **counts, "t": _now_ts()}
        )
    if fields:
        step.save(update_fields=fields)
    changes.insert(
        0,
        {
            "type": "step",
            "id": step.pk,
            "service": service,
            "kind": kind,
            "status": step.status,
            "message": step.message,
            "t": _now_ts(),
        },
    )
    lines = [str(line)[:2000] for line in (log or [])]
    if lines:
        last = deployment.log_lines.order_by("-seq").values_list("seq", flat=True).first() or 0
        rows = DeploymentLogLine.objects.bulk_create(
            [
                DeploymentLogLine(
                    deployment=deployment,
                    seq=last + i,
                    step=step,
                    service_name=service,
                    at=now,
                    text=text,
                )
                for i, text in enumerate(lines, start=1)
            ]
        )
        changes += [
            {
                "type": "log",
                "seq": row.seq,
                "service": service,
                "step": step.pk,
                "text": row.text,
                "t": _now_ts(),
            }
            for row in rows
        ]
    Deployment.objects.filter(pk=deployment.pk).update(heartbeat_at=now)
    events.publish(
        deployment.topic,
        "deployment.progress",
        project=deployment.project_id,
        actor=actor,
        obj=deployment,
        data={"changes": changes},
    )
    return step


@transaction.atomic
def report_finish(
    actor,  # noqa: ANN001
    membership: Membership,
    deployment: Deployment,
    *,
    status: str,
    reason: str = "",
) -> Deployment:
    deployment = _external(actor, membership, deployment)
    if status not in (D.SUCCEEDED, D.FAILED):
        raise ValidationError({"status": "Finish as 'succeeded' or 'failed'."})
    if deployment.status == status:
        return deployment
    if deployment.status != D.RUNNING:
        raise Conflict(f"Deployment #{deployment.pk} is {deployment.get_status_display().lower()}.")
    reason = (reason or "").strip()
    if status == D.FAILED and not reason:
        raise ValidationError({"reason": "Say why the deployment failed."})
    _finish_steps(
        deployment,
        STEP.SKIPPED if status == D.SUCCEEDED else STEP.FAILED,
        reason or "not reported",
    )
    _set_status(deployment, status, actor=actor, reason=reason)
    if status == D.SUCCEEDED:
        services = deployment.project.services.all()
        record_deployed_versions(
            deployment.environment_id,
            deployment.pk,
            [{"service_id": s.pk, "version": deployment.version} for s in services],
        )
    _after_finish(deployment, actor)
    return deployment
