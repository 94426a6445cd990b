"""Releases: create, change, review, sign off, accept risks, acknowledge warnings, override, lock.

Each verb validates, then mutates inside a transaction with the release's row locked (so a change
of commit and a sign-off or a deployment request are serialised, and nothing is approved on stale
sign-offs), then publishes an event on the release's topic.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, IntegerField, OuterRef
from django.db.models.functions import Cast
from django.utils import timezone

from releasecenter import events
from releasecenter.access import require_role
from releasecenter.models import AuditEvent, Environment, Membership, Project
from releasecenter.services import Conflict
from releasecenter.validation import ascii_int

from ..decision import Decision, decide
from ..models import (
    EnvironmentLock,
    EnvironmentPolicy,
    FollowUp,
    Override,
    Release,
    ReleaseTarget,
    RiskAcceptance,
    Signoff,
    SignoffRequirement,
    TimeWindow,
    WarningAcknowledgement,
)

__all__ = [
    "DeployRefused",
    "EnvironmentLocked",
    "accept_risk",
    "acknowledge_warning",
    "add_time_window",
    "cancel_target",
    "check_deploy_allowed",
    "clean_signoff_requirements",
    "create_release",
    "delete_time_window",
    "expire_lapsed_approvals",
    "gate_deployment",
    "lock_environment",
    "on_run_event",
    "override_no_go",
    "refresh_approval",
    "resolve_follow_up",
    "save_environment_policy",
    "set_requester_counts_for_quorum",
    "set_signoff_requirements",
    "sign_off",
    "submit_for_review",
    "transition",
    "may_unlock",
    "unlock_environment",
    "update_policy",
    "update_release",
    "withdraw_signoff",
]

S = ReleaseTarget.Status
MAX_RISK_ACCEPTANCE = timedelta(days=90)


class DeployRefused(Exception):
    """The decision is no-go and nobody overrode it; carries the decision with its reasons."""

    def __init__(self, decision: Decision) -> None:
        super().__init__("; ".join(r.message for r in decision.reasons))
        self.decision = decision


class EnvironmentLocked(DeployRefused):
    """The environment is locked. Unlike the other no-go reasons, no override gets past it: the
    lock is held by a person for a reason, and only its release (audited) lets deployments in."""

    code = "locked"

    def __init__(self, decision: Decision, lock: EnvironmentLock) -> None:
        super().__init__(decision)
        self.lock = lock


def _publish(target_or_release, verb: str, actor, **kwargs: Any) -> None:  # noqa: ANN001
    release = getattr(target_or_release, "release", target_or_release)
    events.publish(release.topic, verb, project=release.project_id, actor=actor, **kwargs)


def _locked_release(release: Release) -> Release:
    # Lock the release row only: a FOR UPDATE over the join would lock the project's row too, and
    # every worker writing an event row of the project (a FOR KEY SHARE on it) would then queue
    # behind this request while it waits for that worker: a deadlock.
    return (
        Release.objects.select_for_update(of=("self",)).select_related("project").get(pk=release.pk)
    )


def _target(release: Release, environment_name: str) -> ReleaseTarget:
    target = (
        ReleaseTarget.objects.select_related("environment", "release__project")
        .filter(release=release, environment__name=environment_name)
        .first()
    )
    if target is None:
        raise ValidationError(
            {"environment": f"The release does not target an environment '{environment_name}'."}
        )
    return target


# --- Creating and changing releases ------------------------------------------------------------


def create_release(
    actor,  # noqa: ANN001
    membership: Membership,
    *,
    version: str,
    commit_sha: str,
    notes: str = "",
    planned_start: datetime | None = None,
    environments: list[str] | None = None,
) -> Release:
    """A release targeting the given environments (all of the project's by default), in promotion
    order, each with checklist runs from its policy's templates."""
    require_role(membership, Membership.Role.ENGINEER)
    project = membership.project
    release = Release(
        project=project,
        version=(version or "").strip(),
        commit_sha=(commit_sha or "").strip(),
        notes=notes or "",
        planned_start=planned_start,
        created_by=actor,
    )
    release.full_clean(validate_unique=False, validate_constraints=False)
    envs = list(project.environments.order_by("order", "name"))
    if environments is not None:
        by_name = {e.name: e for e in envs}
        unknown = [name for name in environments if name not in by_name]
        if unknown:
            raise ValidationError(
                {"environments": f"Unknown environment(s): {', '.join(unknown)}."}
            )
        if not environments:
            raise ValidationError({"environments": "Choose at least one environment."})
        envs = [e for e in envs if e.name in set(environments)]
    if not envs:
        raise ValidationError("The project has no environments to release to.")
    with transaction.atomic():
        try:
            with transaction.atomic():
                release.save()
        except IntegrityError as exc:
            raise Conflict(f"Release {release.version} exists in this project.") from exc
        policies = {
            p.environment_id: p for p in EnvironmentPolicy.objects.filter(environment__in=envs)
        }
        for env in envs:
            target = ReleaseTarget.objects.create(release=release, environment=env)
            policy = policies.get(env.pk)
            for template in _policy_templates(policy):
                from checklists.services import create_run

                run = create_run(
                    actor,
                    template,
                    environment=env,
                    planned_start=planned_start,
                    title=f"{template.name} — {release.version} in {env.name}",
                )
                target.runs.add(run)
        _publish(
            release,
            "release.created",
            actor,
            obj=release,
            after={
                "version": release.version,
                "commit_sha": release.commit_sha,
                "environments": [e.name for e in envs],
            },
        )
    return release


def _policy_templates(policy: EnvironmentPolicy | None) -> list:
    return list(policy.checklist_templates.all()) if policy is not None else []


RELEASE_FIELDS = ["version", "commit_sha", "notes", "planned_start"]


@transaction.atomic
def update_release(
    actor,  # noqa: ANN001
    membership: Membership,
    release: Release,
    *,
    expected_revision: int | None = None,
    **changes: Any,
) -> Release:
    """Change a release. A new version or commit makes every sign-off stale (kept, not counted);
    a new commit also takes back what was proven about the old one (see _reset_for_new_commit).

    ``expected_revision``: the revision the caller saw; another one is a Conflict and nothing
    changes. A change of commit while a deployment of the release is active is a Conflict too:
    the deployment would run one commit and be credited to another."""
    require_role(membership, Membership.Role.ENGINEER)
    unknown = sorted(set(changes) - set(RELEASE_FIELDS))
    if unknown:
        raise ValidationError({unknown[0]: f"'{unknown[0]}' cannot be changed here."})
    release = _locked_release(release)
    if expected_revision is not None and expected_revision != release.revision:
        raise Conflict(
            f"Release {release.version} is at revision {release.revision}, not "
            f"{expected_revision}: someone changed it since you read it."
        )
    before = {f: getattr(release, f) for f in RELEASE_FIELDS}
    for key, value in changes.items():
        setattr(release, key, value.strip() if isinstance(value, str) and key != "notes" else value)
    release.full_clean(validate_unique=False, validate_constraints=False)
    commit_changed = release.commit_sha != before["commit_sha"]
    identity_changed = commit_changed or release.version != before["version"]
    if commit_changed:
        _refuse_while_deploying(release)
    now = timezone.now()
    if identity_changed:
        release.revision += 1
        what = []
        if commit_changed:
            what.append(
                f"commit changed from {before['commit_sha'][:12]} to {release.commit_sha[:12]}"
            )
        if release.version != before["version"]:
            what.append(f"version changed from {before['version']} to {release.version}")
        reason = "; ".join(what)
        Signoff.objects.filter(
            target__release=release, stale_at__isnull=True, withdrawn_at__isnull=True
        ).update(stale_at=now, stale_reason=reason[:200])
    release.updated_at = now
    try:
        with transaction.atomic():
            release.save()
    except IntegrityError as exc:
        raise Conflict(f"Release {release.version} exists in this project.") from exc
    after = {f: getattr(release, f) for f in RELEASE_FIELDS}
    _publish(
        release,
        "release.updated",
        actor,
        obj=release,
        before={k: str(v) if v is not None else None for k, v in before.items()},
        after={k: str(v) if v is not None else None for k, v in after.items()},
    )
    if commit_changed:
        _reset_for_new_commit(actor, release, before["commit_sha"])
    for target in release.targets.select_related("environment"):
        refresh_approval(target, actor)
    return release


def _refuse_while_deploying(release: Release) -> None:
    from ..models import Deployment

    active = (
        Deployment.objects.filter(release=release, status__in=Deployment.ACTIVE)
        .select_related("environment")
        .first()
    )
    if active is not None:
        raise Conflict(
            f"Deployment #{active.pk} of {release.version} is {active.get_status_display().lower()}"
            f" in {active.environment.name}; change the commit after it ends."
        )


# What a deployed release's target goes back to when its commit changes.
PROVEN_STATES = {S.DEPLOYED, S.VERIFIED, S.FAILED, S.ROLLED_BACK}


def _reset_for_new_commit(actor, release: Release, old_commit: str) -> list[dict[str, Any]]:  # noqa: ANN001
    """Proof belongs to a commit: for each environment, the deployed/verified state goes back to
    not deployed, warning acknowledgements and risk acceptances lapse, and checklist items whose
    tick is proof about one build reopen. Each environment where something was reset gets a
    "release.commit_reset" timeline entry naming both commits and what was reset; the release
    page shows the entries of the current revision."""
    from checklists.services import reopen_for_new_build

    now = timezone.now()
    change = f"commit changed from {old_commit[:12]} to {release.commit_sha[:12]}"
    summaries = []
    targets = (
        ReleaseTarget.objects.select_for_update(of=("self",))
        .select_related("environment", "release__project")
        .filter(release=release)
        .order_by("environment__order", "environment__name")
    )
    for target in targets:
        status_before = target.status
        if target.status in PROVEN_STATES:
            transition(target, S.IN_REVIEW, actor, reason=change)
        if target.deployed_commit or target.deployed_at or target.verified_at:
            target.deployed_commit, target.deployed_at, target.verified_at = "", None, None
            target.save(update_fields=["deployed_commit", "deployed_at", "verified_at"])
        acknowledgements = list(
            WarningAcknowledgement.objects.filter(target=target).values_list("item_text", flat=True)
        )
        WarningAcknowledgement.objects.filter(target=target).delete()
        acceptances = list(
            RiskAcceptance.objects.filter(target=target, revoked_at__isnull=True).values_list(
                "item_text", flat=True
            )
        )
        RiskAcceptance.objects.filter(target=target, revoked_at__isnull=True).update(revoked_at=now)
        reopened = [
            row.item.text
            for row in reopen_for_new_build(
                actor, list(target.runs.values_list("pk", flat=True)), change
            )
        ]
        parts = []
        if status_before in PROVEN_STATES:
            parts.append(f"was {S(status_before).label.lower()}, now not deployed")
        if reopened:
            parts.append(
                f"{len(reopened)} checklist item{'s' if len(reopened) != 1 else ''} reopened"
            )
        if acknowledgements:
            count = len(acknowledgements)
            parts.append(f"{count} warning acknowledgement{'s' if count != 1 else ''} lapsed")
        if acceptances:
            count = len(acceptances)
            parts.append(f"{count} risk acceptance{'s' if count != 1 else ''} lapsed")
        if not parts:
            continue
        summary = {
            "environment": target.environment.name,
            "old_commit": old_commit,
            "new_commit": release.commit_sha,
            "revision": release.revision,
            "status_before": status_before,
            "summary": "; ".join(parts),
            "reopened": reopened[:50],
            "acknowledgements": acknowledgements[:50],
            "acceptances": acceptances[:50],
        }
        _publish(target, "release.commit_reset", actor, obj=target, data=summary)
        summaries.append(summary)
    return summaries


def transition(target: ReleaseTarget, status: str, actor=None, reason: str = "") -> ReleaseTarget:  # noqa: ANN001
    """Move a target along the status table, stamping the milestone and recording the event."""
    if target.status == status:
        return target
    if not target.can_move_to(status):
        raise ValidationError(
            f"{target.environment.name}: a release cannot go from "
            f"{target.get_status_display().lower()} to {S(status).label.lower()}."
        )
    before = target.status
    now = timezone.now()
    target.status = status
    target.status_changed_at = now
    fields = ["status", "status_changed_at"]
    stamp = f"{status}_at"
    if hasattr(target, stamp):
        setattr(target, stamp, now)
        fields.append(stamp)
    target.save(update_fields=fields)
    _publish(
        target,
        "release.status_changed",
        actor,
        obj=target,
        before={"status": before},
        after={"status": status},
        data={"environment": target.environment.name, "status": status, "reason": reason},
    )
    return target


@transaction.atomic
def submit_for_review(actor, membership: Membership, release: Release) -> Release:  # noqa: ANN001
    require_role(membership, Membership.Role.ENGINEER)
    release = _locked_release(release)
    drafts = list(release.targets.select_related("environment").filter(status=S.DRAFT))
    if not drafts:
        raise ValidationError("Nothing to submit: no environment of this release is a draft.")
    for target in drafts:
        transition(target, S.IN_REVIEW, actor)
        refresh_approval(target, actor)
    return release


def refresh_approval(
    target: ReleaseTarget,
    actor=None,  # noqa: ANN001
    reason: str = "gates and sign-offs",
) -> ReleaseTarget:
    """Follow the gates and sign-offs while under review: approved when none blocks, blocked
    while a rejection stands, in review otherwise. Time windows, locks and incidents do not
    change approval; they only stop a deployment."""
    if target.status not in ReleaseTarget.REVIEW_STATES:
        return target
    blockers = decide(target.release, target.environment).approval_blockers
    if any(r.code == "signoff_rejected" for r in blockers):
        wanted = S.BLOCKED
    elif blockers:
        wanted = S.IN_REVIEW
    else:
        wanted = S.APPROVED
    return transition(target, wanted, actor, reason=reason)


def expire_lapsed_approvals(
    *, release: Release | None = None, project: Project | None = None
) -> int:
    """Approvals that leaned on a risk acceptance which has expired since go back to review.

    Expiry is the one thing that changes approval without anyone acting, so instead of a
    scheduled sweep, every page and API answer that shows a release's status calls this first
    (one query when nothing lapsed). Returns how many targets were re-evaluated."""
    from checklists.models import RunItem

    lapsed = RiskAcceptance.objects.filter(
        target__status=S.APPROVED,
        revoked_at__isnull=True,
        expires_at__lte=timezone.now(),
        # Approved before the acceptance expired: an approval granted after it does not lean
        # on it (the decision never counts an expired acceptance).
        expires_at__gt=F("target__status_changed_at"),
    ).filter(
        # A gate ticked since needs the acceptance no more; without this, such a target would
        # be re-evaluated, unchanged, on every read. (An item key is its RunItem's pk.)
        Exists(
            RunItem.objects.filter(
                pk=Cast(OuterRef("item_key"), IntegerField()), state=RunItem.State.OPEN
            )
        )
    )
    if release is not None:
        lapsed = lapsed.filter(target__release=release)
    if project is not None:
        lapsed = lapsed.filter(target__release__project=project)
    target_ids = sorted(set(lapsed.values_list("target_id", flat=True)))
    for target_id in target_ids:
        with transaction.atomic():
            target = (
                ReleaseTarget.objects.select_for_update(of=("self",))
                .select_related("environment", "release__project")
                .get(pk=target_id)
            )
            refresh_approval(target, reason="a risk acceptance expired")
    return len(target_ids)


def _review_targets_of_run(run_id: int) -> list[int]:
    """Ids of the release targets in review that this run belongs to.

    Every tick of every run asks this, after its commit, and most runs belong to no release in
    review: one plain statement on the join table, not a queryset compiled per tick (the ORM's
    compile and row building were most of this listener's cost)."""
    through = ReleaseTarget.runs.through._meta
    target = ReleaseTarget._meta
    states = sorted(ReleaseTarget.REVIEW_STATES)
    sql = (
        f"SELECT m.{through.get_field('releasetarget').column} "  # noqa: S608 - names from _meta
        f"FROM {through.db_table} m JOIN {target.db_table} t "
        f"ON t.{target.pk.column} = m.{through.get_field('releasetarget').column} "
        f"WHERE m.{through.get_field('run').column} = %s "
        f"AND t.{target.get_field('status').column} IN ({', '.join(['%s'] * len(states))})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [run_id, *states])
        return [row[0] for row in cursor.fetchall()]


def on_run_event(event: AuditEvent) -> None:
    """A checklist run changed: re-evaluate the approval of every release target it belongs to."""
    run_id = ascii_int(event.topic.partition(":")[2])
    if run_id is None:
        return
    for target_id in _review_targets_of_run(run_id):
        with transaction.atomic():
            locked = (
                ReleaseTarget.objects.select_for_update(of=("self",))
                .select_related("environment", "release__project")
                .get(pk=target_id)
            )
            refresh_approval(locked)


@transaction.atomic
def cancel_target(
    actor, membership: Membership, release: Release, environment_name: str
) -> ReleaseTarget:  # noqa: ANN001
    require_role(membership, Membership.Role.LEAD)
    _locked_release(release)
    return transition(_target(release, environment_name), S.CANCELLED, actor)


# --- Sign-offs --------------------------------------------------------------------------------


def sign_off(
    actor,  # noqa: ANN001
    membership: Membership,
    release: Release,
    *,
    environment: str,
    role: str,
    decision: str,
    comment: str = "",
) -> Signoff:
    """Fill a sign-off role. 403 without that capacity; 409 when the person already fills
    another role on this release in this environment."""
    if decision not in Signoff.Decision.values:
        raise ValidationError({"decision": "Choose 'approve' or 'reject'."})
    comment = (comment or "").strip()
    if decision == Signoff.Decision.REJECT and not comment:
        raise ValidationError({"comment": "Say why you reject, so it can be fixed."})
    if len(comment) > 2000:
        raise ValidationError({"comment": "A comment is at most 2000 characters."})
    with transaction.atomic():
        release = _locked_release(release)
        target = _target(release, environment)
        if target.status in (S.CANCELLED,):
            raise ValidationError("The release is cancelled in this environment.")
        required = set(
            SignoffRequirement.objects.filter(environment=target.environment).values_list(
                "role", flat=True
            )
        )
        if role not in required:
            raise ValidationError(
                {"role": f"{target.environment.name} does not require a '{role}' sign-off."}
            )
        if role not in (membership.signoff_capacities or []):
            raise PermissionDenied(f"You do not hold the '{role}' sign-off capacity.")
        active = Signoff.objects.filter(
            target=target, user=actor, stale_at__isnull=True, withdrawn_at__isnull=True
        ).first()
        if active is not None and active.role != role:
            raise Conflict(
                f"You already sign off as {active.role} on this release in "
                f"{target.environment.name}; one person fills one role."
            )
        now = timezone.now()
        if active is not None:
            # Changing one's own mind in the same role replaces the earlier sign-off.
            active.withdrawn_at = now
            active.save(update_fields=["withdrawn_at"])
        try:
            with transaction.atomic():
                signoff = Signoff.objects.create(
                    target=target,
                    role=role,
                    user=actor,
                    decision=decision,
                    comment=comment,
                    release_revision=release.revision,
                    created_at=now,
                )
        except IntegrityError as exc:
            raise Conflict("You already fill a role on this release in this environment.") from exc
        _publish(
            target,
            "release.signed_off",
            actor,
            obj=signoff,
            after={
                "role": role,
                "decision": decision,
                "comment": comment,
                "environment": target.environment.name,
            },
            data={"environment": target.environment.name, "role": role, "decision": decision},
        )
        refresh_approval(target, actor)
    return signoff


@transaction.atomic
def withdraw_signoff(actor, membership: Membership, signoff: Signoff) -> Signoff:  # noqa: ANN001
    """Withdraw one's own sign-off (a lead may withdraw anyone's, e.g. a stale rejection)."""
    _locked_release(signoff.target.release)
    signoff = (
        Signoff.objects.select_for_update(of=("self",))
        .select_related("target__environment", "target__release__project")
        .get(pk=signoff.pk)
    )
    if signoff.user_id != actor.pk:
        require_role(membership, Membership.Role.LEAD)
    if not signoff.active:
        raise ValidationError("This sign-off is no longer active.")
    signoff.withdrawn_at = timezone.now()
    signoff.save(update_fields=["withdrawn_at"])
    _publish(
        signoff.target,
        "release.signoff_withdrawn",
        actor,
        obj=signoff,
        before={"role": signoff.role, "decision": signoff.decision},
        data={"environment": signoff.target.environment.name, "role": signoff.role},
    )
    refresh_approval(signoff.target, actor)
    return signoff


# --- Gates ------------------------------------------------------------------------------------


def _open_gate(target: ReleaseTarget, item_key: str, severity: str):  # noqa: ANN202
    from ..decision import _gate_items, _run_ids

    for gate in _gate_items(_run_ids(target)):
        if gate.key == item_key:
            if gate.severity != severity:
                raise ValidationError(
                    f"That item is a {gate.severity.upper()} gate, not {severity.upper()}."
                )
            if gate.state != "open":
                raise ValidationError("That gate is already ticked.")
            return gate
    raise ValidationError("No such gate on this release in this environment.")


@transaction.atomic
def accept_risk(
    actor,  # noqa: ANN001
    membership: Membership,
    release: Release,
    *,
    environment: str,
    item_key: str,
    reason: str,
    expires_at: datetime,
) -> RiskAcceptance:
    """A lead accepts an unticked CONDITIONAL gate for production, with a reason and an expiry."""
    require_role(membership, Membership.Role.LEAD)
    release = _locked_release(release)
    target = _target(release, environment)
    if target.environment.kind != Environment.Kind.PRODUCTION:
        raise ValidationError("Risks are accepted for production only; elsewhere, tick the item.")
    reason = (reason or "").strip()
    if len(reason) < 10:
        raise ValidationError({"reason": "Give a reason of at least 10 characters."})
    now = timezone.now()
    if expires_at is None or expires_at <= now:
        raise ValidationError({"expires_at": "The acceptance must expire in the future."})
    if expires_at - now > MAX_RISK_ACCEPTANCE:
        raise ValidationError({"expires_at": "An acceptance lasts at most 90 days."})
    gate = _open_gate(target, item_key, "conditional")
    acceptance = RiskAcceptance.objects.create(
        target=target,
        item_key=item_key,
        item_text=gate.text,
        accepted_by=actor,
        reason=reason,
        expires_at=expires_at,
    )
    _publish(
        target,
        "release.risk_accepted",
        actor,
        obj=acceptance,
        after={
            "item": gate.text,
            "reason": reason,
            "expires_at": expires_at.isoformat(),
            "environment": target.environment.name,
        },
        data={"environment": target.environment.name},
    )
    refresh_approval(target, actor)
    return acceptance


@transaction.atomic
def acknowledge_warning(
    actor,
    membership: Membership,
    release: Release,
    *,
    environment: str,
    item_key: str,  # noqa: ANN001
) -> WarningAcknowledgement:
    require_role(membership, Membership.Role.ENGINEER)
    release = _locked_release(release)
    target = _target(release, environment)
    gate = _open_gate(target, item_key, "warning")
    try:
        with transaction.atomic():
            ack = WarningAcknowledgement.objects.create(
                target=target, item_key=item_key, item_text=gate.text, acknowledged_by=actor
            )
    except IntegrityError as exc:
        raise Conflict("That warning is already acknowledged.") from exc
    _publish(
        target,
        "release.warning_acknowledged",
        actor,
        obj=ack,
        after={"item": gate.text, "environment": target.environment.name},
        data={"environment": target.environment.name},
    )
    refresh_approval(target, actor)
    return ack


# --- Deciding to deploy -----------------------------------------------------------------------


def check_deploy_allowed(
    actor,  # noqa: ANN001
    membership: Membership,
    release: Release,
    environment: Environment,
    *,
    override_reason: str = "",
    expected_commit: str | None = None,
) -> Override | None:
    """The gate in front of every deployment. Call inside the transaction that creates the
    deployment: it locks the release row, so a concurrent change of commit either lands before
    (and the sign-offs it made stale no longer count) or waits until the deployment is recorded.

    Returns None on "go", the Override on a lead's break-glass, or raises DeployRefused.
    """
    return gate_deployment(
        actor,
        membership,
        release,
        environment,
        override_reason=override_reason,
        expected_commit=expected_commit,
    )[1]


def gate_deployment(
    actor,  # noqa: ANN001
    membership: Membership,
    release: Release,
    environment: Environment,
    *,
    override_reason: str = "",
    expected_commit: str | None = None,
) -> tuple[Decision, Override | None]:
    """check_deploy_allowed, also returning the decision it judged by (a deployment keeps it as
    its snapshot)."""
    require_role(membership, Membership.Role.ENGINEER)
    locked = _locked_release(release)
    if expected_commit is not None and expected_commit != locked.commit_sha:
        raise Conflict(
            f"The release is now at commit {locked.commit_sha[:12]}, not {expected_commit[:12]}."
        )
    decision = decide(locked, environment, requester=actor)
    if decision.go:
        return decision, None
    lock = _held_lock(environment)
    if lock is not None:
        # Break-glass is for no-go reasons; a lock is a person saying "not now", so nothing,
        # an override included, deploys until that person or an admin releases it.
        raise EnvironmentLocked(decision, lock)
    if not override_reason:
        raise DeployRefused(decision)
    target = ReleaseTarget.objects.select_related("environment", "release__project").get(
        release=locked, environment=environment
    )
    return decision, override_no_go(actor, membership, target, override_reason, decision)


def override_no_go(
    actor,
    membership: Membership,
    target: ReleaseTarget,
    reason: str,
    decision: Decision,  # noqa: ANN001
) -> Override:
    """Break-glass: a lead goes ahead despite a no-go. Audited, shown in red, and followed up."""
    require_role(membership, Membership.Role.LEAD)
    reason = (reason or "").strip()
    if len(reason) < 10:
        raise ValidationError({"override_reason": "Give a reason of at least 10 characters."})
    reasons = decision.as_dict()["reasons"]
    override = Override.objects.create(
        target=target, overridden_by=actor, reason=reason, reasons=reasons
    )
    FollowUp.objects.create(
        release=target.release,
        override=override,
        text=f"Review the override of a no-go in {target.environment.name} by "
        f"{actor.username}: {reason}",
    )
    _publish(
        target,
        "release.overridden",
        actor,
        obj=override,
        after={"reason": reason, "reasons": reasons, "environment": target.environment.name},
        data={"environment": target.environment.name},
    )
    return override


@transaction.atomic
def resolve_follow_up(
    actor, membership: Membership, follow_up: FollowUp, resolution: str
) -> FollowUp:  # noqa: ANN001
    require_role(membership, Membership.Role.LEAD)
    follow_up = (
        FollowUp.objects.select_for_update(of=("self",))
        .select_related("release")
        .get(pk=follow_up.pk)
    )
    if follow_up.resolved_at is not None:
        raise ValidationError("This follow-up is already resolved.")
    resolution = (resolution or "").strip()
    if not resolution:
        raise ValidationError({"resolution": "Say what the review found."})
    follow_up.resolved_at = timezone.now()
    follow_up.resolved_by = actor
    follow_up.resolution = resolution
    follow_up.save(update_fields=["resolved_at", "resolved_by", "resolution"])
    _publish(
        follow_up.release,
        "release.follow_up_resolved",
        actor,
        obj=follow_up,
        after={"resolution": resolution},
    )
    return follow_up


# --- Environment locks and policy -------------------------------------------------------------


@transaction.atomic
def lock_environment(
    actor, membership: Membership, environment: Environment, reason: str
) -> EnvironmentLock:  # noqa: ANN001
    require_role(membership, Membership.Role.ENGINEER)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why the environment is locked."})
    try:
        with transaction.atomic():
            lock = EnvironmentLock.objects.create(
                environment=environment, reason=reason, locked_by=actor
            )
    except IntegrityError as exc:
        raise Conflict(f"{environment.name} is already locked.") from exc
    events.publish(
        environment.project.topic,
        "environment.locked",
        project=environment.project_id,
        actor=actor,
        obj=lock,
        after={"environment": environment.name, "reason": reason},
    )
    return lock


def _held_lock(environment: Environment) -> EnvironmentLock | None:
    return (
        EnvironmentLock.objects.filter(environment=environment, released_at__isnull=True)
        .select_related("locked_by")
        .first()
    )


def may_unlock(membership: Membership, lock: EnvironmentLock) -> bool:
    """Whoever holds a lock may release it, and so may a project admin; nobody else."""
    return lock.locked_by_id == membership.user_id or membership.has_role(Membership.Role.ADMIN)


@transaction.atomic
def unlock_environment(
    actor,  # noqa: ANN001
    membership: Membership,
    environment: Environment,
    reason: str = "",
) -> EnvironmentLock:
    """Release the environment's lock: only its holder or a project admin, always with a reason,
    which the audit log keeps beside the lock's own."""
    require_role(membership, Membership.Role.ENGINEER)
    lock = (
        EnvironmentLock.objects.select_for_update(of=("self",))
        .select_related("locked_by")
        .filter(environment=environment, released_at__isnull=True)
        .first()
    )
    if lock is None:
        raise ValidationError(f"{environment.name} is not locked.")
    if not may_unlock(membership, lock):
        raise PermissionDenied(
            f"{environment.name} is locked by {lock.locked_by.username}; only they or a project "
            "admin may unlock it."
        )
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why the lock can be released."})
    lock.released_at = timezone.now()
    lock.released_by = actor
    lock.release_reason = reason[:2000]
    lock.save(update_fields=["released_at", "released_by", "release_reason"])
    events.publish(
        environment.project.topic,
        "environment.unlocked",
        project=environment.project_id,
        actor=actor,
        obj=lock,
        before={"reason": lock.reason, "locked_by": lock.locked_by.username},
        after={"environment": environment.name, "reason": lock.release_reason},
    )
    return lock


POLICY_FIELDS = ["min_notice", "require_previous_verified", "block_on_incidents", "auto_rollback"]


@transaction.atomic
def update_policy(
    actor,  # noqa: ANN001
    membership: Membership,
    environment: Environment,
    *,
    checklist_templates: list | None = None,
    **fields: Any,
) -> EnvironmentPolicy:
    require_role(membership, Membership.Role.ADMIN)
    policy = _update_policy(actor, environment, checklist_templates, fields)
    _refresh_environment(environment, actor)
    return policy


def _update_policy(
    actor,  # noqa: ANN001
    environment: Environment,
    checklist_templates: list | None,
    fields: dict[str, Any],
) -> EnvironmentPolicy:
    if checklist_templates is not None and any(
        t.project_id != environment.project_id for t in checklist_templates
    ):
        raise ValidationError({"checklist_templates": "Templates must be of this project."})
    policy, _ = EnvironmentPolicy.objects.select_for_update().get_or_create(environment=environment)
    before = {f: str(getattr(policy, f)) for f in POLICY_FIELDS}
    before["checklist_templates"] = sorted(t.pk for t in _policy_templates(policy))
    for key, value in fields.items():
        if key in POLICY_FIELDS:
            setattr(policy, key, value)
    if policy.min_notice is not None and policy.min_notice < timedelta(0):
        raise ValidationError({"min_notice": "Notice cannot be negative."})
    policy.full_clean()
    policy.save()
    if checklist_templates is not None:
        policy.checklist_templates.set(checklist_templates)
    after = {f: str(getattr(policy, f)) for f in POLICY_FIELDS}
    after["checklist_templates"] = (
        sorted(t.pk for t in checklist_templates)
        if (checklist_templates is not None)
        else before["checklist_templates"]
    )
    events.publish(
        environment.project.topic,
        "environment.policy_updated",
        project=environment.project_id,
        actor=actor,
        obj=policy,
        before=before,
        after=after,
    )
    return policy


MAX_ROLE_NAME = 80
MAX_QUORUM = 10


def clean_signoff_requirements(requirements: list[tuple[str, int]]) -> dict[str, int]:
    """{role: quorum}, in the given order, from (role, quorum) pairs; refuses an empty or
    overlong name, a role listed twice, or a quorum outside 1 to 10. The policy form and the
    services share it, so the page and a direct call give the same answer."""
    cleaned: dict[str, int] = {}
    for role, quorum in requirements:
        role = " ".join((role or "").split())
        if not role or len(role) > MAX_ROLE_NAME:
            raise ValidationError(
                {"requirements": f"A role name is 1 to {MAX_ROLE_NAME} characters."}
            )
        if role in cleaned:
            raise ValidationError({"requirements": f"'{role}' is listed twice."})
        if isinstance(quorum, bool) or not isinstance(quorum, int) or not 1 <= quorum <= MAX_QUORUM:
            raise ValidationError({"requirements": f"The quorum of '{role}' is 1 to {MAX_QUORUM}."})
        cleaned[role] = quorum
    return cleaned


@transaction.atomic
def set_signoff_requirements(
    actor,  # noqa: ANN001
    membership: Membership,
    environment: Environment,
    requirements: list[tuple[str, int]],
) -> list[SignoffRequirement]:
    """Replace the environment's required sign-off roles, each with its quorum."""
    require_role(membership, Membership.Role.ADMIN)
    cleaned = clean_signoff_requirements(requirements)
    if _replace_requirements(actor, environment, cleaned):
        _refresh_environment(environment, actor)
    return list(environment.signoff_requirements.all())


def _replace_requirements(actor, environment: Environment, cleaned: dict[str, int]) -> bool:  # noqa: ANN001
    # The environment's row lock serialises two admins saving requirements at once.
    Environment.objects.select_for_update().filter(pk=environment.pk).first()
    before = list(environment.signoff_requirements.order_by("id").values_list("role", "quorum"))
    if before == list(cleaned.items()):
        return False
    environment.signoff_requirements.all().delete()
    SignoffRequirement.objects.bulk_create(
        [SignoffRequirement(environment=environment, role=r, quorum=q) for r, q in cleaned.items()]
    )
    events.publish(
        environment.project.topic,
        "environment.signoffs_required",
        project=environment.project_id,
        actor=actor,
        obj=environment,
        before=dict(before),
        after=cleaned,
    )
    return True


@transaction.atomic
def save_environment_policy(
    actor,  # noqa: ANN001
    membership: Membership,
    environment: Environment,
    *,
    signoff_requirements: list[tuple[str, int]],
    checklist_templates: list | None = None,
    **fields: Any,
) -> EnvironmentPolicy:
    """The policy page's one save: rules, templates and required sign-offs together, in one
    transaction, so bad input in any part of the form changes nothing at all."""
    require_role(membership, Membership.Role.ADMIN)
    cleaned = clean_signoff_requirements(signoff_requirements)
    policy = _update_policy(actor, environment, checklist_templates, fields)
    _replace_requirements(actor, environment, cleaned)
    _refresh_environment(environment, actor)
    return policy


def _refresh_environment(environment: Environment, actor) -> None:  # noqa: ANN001
    """A changed policy changes what approval needs: re-evaluate the releases under review in
    this environment, so none stays approved on rules that no longer hold."""
    targets = (
        # Only the target rows: locking the joined release rows too could deadlock with a
        # sign-off, which locks its release first.
        ReleaseTarget.objects.select_for_update(of=("self",))
        .select_related("environment", "release__project")
        .filter(environment=environment, status__in=ReleaseTarget.REVIEW_STATES)
        .order_by("pk")
    )
    for target in targets:
        refresh_approval(target, actor)


@transaction.atomic
def set_requester_counts_for_quorum(actor, membership: Membership, counts: bool) -> Project:  # noqa: ANN001
    """Project-wide: whether the person who requests a deployment counts towards the sign-off
    quorum of every environment (off by default; small teams may turn it on)."""
    require_role(membership, Membership.Role.ADMIN)
    if not isinstance(counts, bool):
        raise ValidationError({"requester_counts_for_quorum": "Answer yes or no."})
    project = Project.objects.select_for_update().get(pk=membership.project_id)
    before = project.requester_counts_for_quorum
    if before == counts:
        return project
    project.requester_counts_for_quorum = counts
    project.save(update_fields=["requester_counts_for_quorum"])
    events.publish(
        project.topic,
        "project.quorum_rule_changed",
        project=project,
        actor=actor,
        obj=project,
        before={"requester_counts_for_quorum": before},
        after={"requester_counts_for_quorum": counts},
    )
    return project


@transaction.atomic
def add_time_window(
    actor, membership: Membership, environment: Environment, **fields: Any
) -> TimeWindow:  # noqa: ANN001
    require_role(membership, Membership.Role.ADMIN)
    window = TimeWindow(environment=environment, **fields)
    window.full_clean()
    window.save()
    events.publish(
        environment.project.topic,
        "environment.window_added",
        project=environment.project_id,
        actor=actor,
        obj=window,
        after={"kind": window.kind, "window": window.describe(), "environment": environment.name},
    )
    return window


@transaction.atomic
def delete_time_window(actor, membership: Membership, window: TimeWindow) -> None:  # noqa: ANN001
    require_role(membership, Membership.Role.ADMIN)
    environment = window.environment
    description = {
        "kind": window.kind,
        "window": window.describe(),
        "environment": environment.name,
    }
    window.delete()
    events.publish(
        environment.project.topic,
        "environment.window_removed",
        project=environment.project_id,
        actor=actor,
        before=description,
    )
