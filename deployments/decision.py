"""The go/no-go decision: may this release deploy to this environment now, and if not, why not.

``decide(release, environment, at)`` reads the state it needs in a fixed number of queries
(``gather``) and hands a plain snapshot to ``evaluate``, a pure function of that snapshot and the
time, which lists every blocker — never only the first. The table tests drive ``evaluate``
directly and ``decide`` end to end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.urls import reverse
from django.utils import timezone

from .lib.windows import WeeklyWindow

APPROVAL_CODES = {
    "gate_no_go",
    "gate_conditional",
    "gate_warning",
    "signoff_missing",
    "signoff_rejected",
}


@dataclass(frozen=True)
class Reason:
    code: str
    message: str
    link: str = ""


@dataclass(frozen=True)
class Gate:
    key: str
    text: str
    severity: str  # "no-go" | "conditional" | "warning"
    state: str  # "open" | "done" | "na"
    accepted_until: datetime | None = None  # an unexpired risk acceptance (conditional only)
    acknowledged: bool = False  # warnings only


@dataclass(frozen=True)
class RoleState:
    role: str
    quorum: int
    approvals: tuple[str, ...] = ()  # usernames that count


@dataclass(frozen=True)
class Rejection:
    role: str
    username: str
    comment: str


@dataclass(frozen=True)
class DecisionInput:
    environment: str
    production: bool
    status: str
    gates: tuple[Gate, ...] = ()
    roles: tuple[RoleState, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    freezes: tuple[WeeklyWindow, ...] = ()
    maintenance: tuple[WeeklyWindow, ...] = ()
    min_notice: timedelta | None = None
    planned_start: datetime | None = None
    approval_time: datetime | None = None
    previous: tuple[str, str] | None = None  # (environment name, status) when the policy asks
    lock: tuple[str, str, datetime] | None = None  # (reason, username, since)
    # (reference, severity, title) or (reference, severity, title, link to the incident)
    incidents: tuple[tuple[str, ...], ...] = ()
    link: str = ""


@dataclass(frozen=True)
class Decision:
    decision: str
    reasons: tuple[Reason, ...] = field(default_factory=tuple)

    @property
    def go(self) -> bool:
        return self.decision == "go"

    @property
    def approval_blockers(self) -> tuple[Reason, ...]:
        return tuple(r for r in self.reasons if r.code in APPROVAL_CODES)

    def as_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "reasons": [asdict(r) for r in self.reasons]}


def _fmt(at: datetime) -> str:
    return at.strftime("%a %Y-%m-%d %H:%M %Z")


def evaluate(snapshot: DecisionInput, at: datetime) -> Decision:
    """Every reason the answer is no, in a stable order; "go" when there is none."""
    s = snapshot
    reasons: list[Reason] = []
    gates_link = f"{s.link}#gates-{s.environment}"
    if s.status == "cancelled":
        reasons.append(Reason("cancelled", "The release is cancelled in this environment.", s.link))
    for gate in s.gates:
        if gate.state in ("done", "na"):
            continue
        if gate.severity == "no-go":
            reasons.append(Reason("gate_no_go", f"NO-GO gate not ticked: {gate.text}", gates_link))
        elif gate.severity == "conditional":
            if s.production and gate.accepted_until is not None and gate.accepted_until > at:
                continue
            hint = " (tick it, or a lead accepts the risk)" if s.production else ""
            reasons.append(
                Reason(
                    "gate_conditional",
                    f"CONDITIONAL gate not ticked{hint}: {gate.text}",
                    gates_link,
                )
            )
        elif gate.severity == "warning" and not gate.acknowledged:
            reasons.append(
                Reason(
                    "gate_warning", f"WARNING not ticked or acknowledged: {gate.text}", gates_link
                )
            )
    signoffs_link = f"{s.link}#signoffs-{s.environment}"
    for rejection in s.rejections:
        comment = f": {rejection.comment}" if rejection.comment else ""
        reasons.append(
            Reason(
                "signoff_rejected",
                f"{rejection.username} rejected as {rejection.role}{comment}",
                signoffs_link,
            )
        )
    for role in s.roles:
        missing = role.quorum - len(role.approvals)
        if missing > 0:
            reasons.append(
                Reason(
                    "signoff_missing",
                    f"Sign-off missing: {role.role} needs {missing} more "
                    f"({len(role.approvals)} of {role.quorum})",
                    signoffs_link,
                )
            )
    for window in s.freezes:
        if window.contains(at):
            name = window.label or "Freeze"
            reasons.append(
                Reason("freeze", f"{name} in force until {_fmt(window.next_end(at))}", s.link)
            )
    if s.maintenance and not any(w.contains(at) for w in s.maintenance):
        upcoming = min(w.next_start(at) for w in s.maintenance)
        reasons.append(
            Reason(
                "maintenance_window",
                f"Outside the allowed maintenance windows; the next opens {_fmt(upcoming)}",
                s.link,
            )
        )
    if s.min_notice:
        if s.planned_start is None:
            reasons.append(
                Reason(
                    "notice",
                    "No planned start: this environment needs notice before deploying.",
                    s.link,
                )
            )
        else:
            approved = s.approval_time or at
            if s.planned_start - approved < s.min_notice:
                hours = s.min_notice.total_seconds() / 3600
                reasons.append(
                    Reason(
                        "notice",
                        f"Minimum notice of {hours:g} h between approval and planned start not met",
                        s.link,
                    )
                )
    if s.previous is not None and s.previous[1] != "verified":
        reasons.append(
            Reason(
                "previous_environment",
                f"{s.previous[0]} must be verified first (it is {s.previous[1].replace('_', ' ')})",
                s.link,
            )
        )
    if s.lock is not None:
        reason, username, since = s.lock
        reasons.append(
            Reason(
                "locked",
                f"{s.environment} is locked by {username} since {_fmt(since)}: {reason}",
                s.link,
            )
        )
    reasons.extend(_incident_reasons(s))
    return Decision("no-go" if reasons else "go", tuple(reasons))


# --- Reading the snapshot ---------------------------------------------------------------------


def _incident_reasons(s: DecisionInput) -> list[Reason]:
    """One reason per open incident the environment's policy blocks on, linking to it."""
    reasons = []
    for reference, severity, title, *link in s.incidents:
        reasons.append(
            Reason(
                "incident",
                f"Open {severity} incident {reference}: {title}",
                link[0] if link else s.link,
            )
        )
    return reasons


def _incidents(environment, rule: str) -> tuple[tuple[str, ...], ...]:  # noqa: ANN001
    """Open incidents in the environment as bad as the rule's severity or worse ("P2" blocks on
    P0, P1 and P2); resolving one removes it from the decision."""
    if not rule:
        return ()
    from monitoring.incidents.models import Incident, at_least

    rows = Incident.objects.blocking(environment, at_least(rule)).select_related("project")
    return tuple(
        (
            r.reference,
            r.severity,
            r.title,
            reverse("incident-detail", args=[r.project.slug, r.number]),
        )
        for r in rows
    )


def _run_ids(target) -> list[int]:  # noqa: ANN001
    return list(target.runs.values_list("pk", flat=True))


def _gate_items(run_ids: list[int]) -> list:
    if not run_ids:
        return []
    from checklists.selectors import gate_items

    return gate_items(run_ids)


def _weekly(w) -> WeeklyWindow:  # noqa: ANN001
    return WeeklyWindow(
        w.start_weekday, w.start_time, w.end_weekday, w.end_time, w.timezone, w.label
    )


def gather_release(release, at: datetime, requester=None) -> dict[int, DecisionInput]:  # noqa: ANN001
    """Snapshots of every environment of a release, {target id: snapshot}, read in a fixed
    number of queries: neither the number of checklist items nor of environments changes it."""
    from .models import (
        EnvironmentLock,
        EnvironmentPolicy,
        ReleaseTarget,
        RiskAcceptance,
        Signoff,
        SignoffRequirement,
        TimeWindow,
        WarningAcknowledgement,
    )

    targets = list(
        ReleaseTarget.objects.filter(release=release)
        .select_related("environment")
        .order_by("environment__order", "environment__name")
    )
    env_ids = [t.environment_id for t in targets]
    target_ids = [t.pk for t in targets]
    policies = {
        p.environment_id: p for p in EnvironmentPolicy.objects.filter(environment_id__in=env_ids)
    }
    runs_by_target: dict[int, list[int]] = {t: [] for t in target_ids}
    for target_id, run_id in ReleaseTarget.runs.through.objects.filter(
        releasetarget_id__in=target_ids
    ).values_list("releasetarget_id", "run_id"):
        runs_by_target[target_id].append(run_id)
    gates_by_run: dict[int, list] = {}
    for gate in _gate_items([r for runs in runs_by_target.values() for r in runs]):
        gates_by_run.setdefault(gate.run_id, []).append(gate)
    accepted: dict[tuple[int, str], datetime] = {
        (a.target_id, a.item_key): a.expires_at
        for a in RiskAcceptance.objects.filter(
            target_id__in=target_ids, revoked_at__isnull=True, expires_at__gt=at
        )
    }
    acknowledged = set(
        WarningAcknowledgement.objects.filter(target_id__in=target_ids).values_list(
            "target_id", "item_key"
        )
    )
    signoffs: dict[int, list] = {t: [] for t in target_ids}
    for signoff in Signoff.objects.filter(
        target_id__in=target_ids, stale_at__isnull=True, withdrawn_at__isnull=True
    ).select_related("user"):
        signoffs[signoff.target_id].append(signoff)
    requirements: dict[int, list] = {e: [] for e in env_ids}
    for requirement in SignoffRequirement.objects.filter(environment_id__in=env_ids):
        requirements[requirement.environment_id].append(requirement)
    windows: dict[int, list] = {e: [] for e in env_ids}
    for window in TimeWindow.objects.filter(environment_id__in=env_ids):
        windows[window.environment_id].append(window)
    locks = {
        lock.environment_id: lock
        for lock in EnvironmentLock.objects.filter(
            environment_id__in=env_ids, released_at__isnull=True
        ).select_related("locked_by")
    }
    excluded = (
        requester.pk
        if requester is not None and not release.project.requester_counts_for_quorum
        else None
    )
    link = reverse("release-detail", args=[release.project.slug, release.pk])

    snapshots = {}
    for index, target in enumerate(targets):
        environment = target.environment
        policy = policies.get(environment.pk)
        gates = tuple(
            Gate(
                g.key,
                g.text,
                g.severity,
                g.state,
                accepted.get((target.pk, g.key)),
                (target.pk, g.key) in acknowledged,
            )
            for run_id in runs_by_target[target.pk]
            for g in gates_by_run.get(run_id, ())
        )
        active = signoffs[target.pk]
        roles = tuple(
            RoleState(
                r.role,
                r.quorum,
                tuple(
                    s.user.username
                    for s in active
                    if s.role == r.role and s.decision == "approve" and s.user_id != excluded
                ),
            )
            for r in requirements[environment.pk]
        )
        previous = None
        if policy is not None and policy.require_previous_verified:
            earlier = [t for t in targets[:index] if t.environment.order < environment.order]
            if earlier:
                previous = (earlier[-1].environment.name, earlier[-1].status)
        lock = locks.get(environment.pk)
        approvals_at = [s.created_at for s in active if s.decision == "approve"]
        env_windows = windows[environment.pk]
        snapshots[target.pk] = DecisionInput(
            environment=environment.name,
            production=environment.kind == "production",
            status=target.status,
            gates=gates,
            roles=roles,
            rejections=tuple(
                Rejection(s.role, s.user.username, s.comment)
                for s in active
                if s.decision == "reject"
            ),
            freezes=tuple(_weekly(w) for w in env_windows if w.kind == "freeze"),
            maintenance=tuple(_weekly(w) for w in env_windows if w.kind == "maintenance"),
            min_notice=policy.min_notice if policy else None,
            planned_start=release.planned_start,
            approval_time=max(approvals_at) if approvals_at else None,
            previous=previous,
            lock=(lock.reason, lock.locked_by.username, lock.locked_at) if lock else None,
            incidents=_incidents(environment, policy.block_on_incidents if policy else ""),
            link=link,
        )
    return snapshots


def gather(target, at: datetime, requester=None) -> DecisionInput:  # noqa: ANN001
    """The snapshot of one release target."""
    return gather_release(target.release, at, requester)[target.pk]


def decide(release, environment, at: datetime | None = None, requester=None) -> Decision:  # noqa: ANN001
    """The decision for a release in one environment at a moment (now by default)."""
    from .models import ReleaseTarget

    at = at or timezone.now()
    target = ReleaseTarget.objects.select_related("release__project", "environment").get(
        release=release, environment=environment
    )
    return evaluate(gather(target, at, requester), at)
