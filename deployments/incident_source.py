"""What deployments contribute to incidents (registered in DeploymentsConfig.ready()).

``monitoring`` owns incidents but may not import this app; through
``releasecenter.incident_hooks`` this source adds to an incident's timeline what happened to
deployments, rollbacks, gates, sign-offs and locks in its environments, lists the suspect
deployments before it started, and rolls one back through the usual rollback service.

Every method reads a fixed number of queries, however many rows the window holds.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Max, Q
from django.urls import reverse

from releasecenter.incident_hooks import (
    Facts,
    IncidentSource,
    ServiceChange,
    Subject,
    Suspect,
    SystemEntry,
)
from releasecenter.validation import ascii_int

from .models import (
    Deployment,
    DeploymentStep,
    EnvironmentLock,
    Override,
    RiskAcceptance,
    Signoff,
    WarningAcknowledgement,
)

# How far before an incident's start a deployment counts as a suspect.
SUSPECT_HOURS = 6

D = Deployment.Status
STEP = DeploymentStep.Status


def deployment_title(deployment: Deployment) -> str:
    """ "Deployment #12 of 1.5.0 to production", "Rollback #13 of #12 in production"."""
    env = deployment.environment.name
    if deployment.kind == Deployment.Kind.ROLLBACK:
        of = f" of #{deployment.rollback_of_id}" if deployment.rollback_of_id else ""
        return f"Rollback #{deployment.pk}{of} in {env} (to {deployment.version})"
    return f"Deployment #{deployment.pk} of {deployment.version} to {env}"


def _outcome(deployment: Deployment, failed_verify: bool) -> str:
    status = deployment.status
    if status == D.SUCCEEDED:
        return "succeeded"
    if status == D.FAILED:
        return "failed verification" if failed_verify else "failed"
    if status == D.CANCELLED:
        return "was cancelled"
    if status == D.ROLLED_BACK:
        return "was rolled back"
    if status == D.ROLLING_BACK:
        return "is rolling back"
    return status.replace("_", " ")


def _url(deployment: Deployment, slug: str) -> str:
    return _deployment_urls(slug)(deployment.pk)


def _deployment_urls(slug: str):  # noqa: ANN202
    """A maker of deployment links for one project: one reverse() instead of one per row (a
    page of 50 suspects and a timeline window link to a hundred deployments)."""
    marker = 987654321
    pattern = reverse("deployment-detail", args=[slug, marker])
    return lambda pk: pattern.replace(str(marker), str(pk))


def _release_url(slug: str, release_id: int) -> str:
    return reverse("release-detail", args=[slug, release_id])


class DeploymentIncidentSource(IncidentSource):
    def _deployments(self, project_id: int, environment_ids: list[int]):  # noqa: ANN202
        return (
            Deployment.objects.filter(project_id=project_id, environment_id__in=environment_ids)
            .select_related("environment", "project", "requested_by")
            .only(
                "id",
                "kind",
                "status",
                "strategy",
                "version",
                "rollback_of_id",
                "requested_by_id",
                "requested_by__username",
                "environment_id",
                "environment__name",
                "project_id",
                "project__slug",
                "release_id",
                "created_at",
                "started_at",
                "finished_at",
                "status_changed_at",
            )
        )

    def timeline(
        self,
        project_id: int,
        environment_ids: list[int],
        since: datetime,
        until: datetime | None,
        *,
        before: datetime | None = None,
        limit: int = 200,
        kinds: set[str] | None = None,
    ) -> list[SystemEntry]:
        def wanted(kind: str) -> bool:
            return kinds is None or kind in kinds

        def inside(at: datetime | None) -> bool:
            return (
                at is not None
                and at >= since
                and (until is None or at <= until)
                and (before is None or at < before)
            )

        def window(field: str) -> Q:
            q = Q(**{f"{field}__gte": since})
            if until is not None:
                q &= Q(**{f"{field}__lte": until})
            if before is not None:
                q &= Q(**{f"{field}__lt": before})
            return q

        entries: list[SystemEntry] = []
        if wanted("deployment") or wanted("rollback"):
            kinds_wanted = [
                k
                for k, name in (
                    (Deployment.Kind.DEPLOY, "deployment"),
                    (Deployment.Kind.ROLLBACK, "rollback"),
                )
                if wanted(name)
            ]
            rows = list(
                self._deployments(project_id, environment_ids)
                .filter(kind__in=kinds_wanted)
                .filter(window("created_at") | window("finished_at") | window("started_at"))
                .order_by("-created_at")[:limit]
            )
            by_id = {d.pk: d for d in rows}
            failed_verify: set[int] = set()
            steps = list(
                DeploymentStep.objects.filter(deployment_id__in=list(by_id))
                .filter(window("finished_at"))
                .exclude(kind=DeploymentStep.Kind.SNAPSHOT)
                .filter(status__in=[STEP.SUCCEEDED, STEP.FAILED])
                # Only what a line says: a window reads a hundred steps per page view.
                .only(
                    "id",
                    "deployment_id",
                    "kind",
                    "status",
                    "service_name",
                    "tier",
                    "message",
                    "finished_at",
                )
                .order_by("-finished_at")[:limit]
            )
            for step in steps:
                if step.kind == DeploymentStep.Kind.VERIFY and step.status == STEP.FAILED:
                    failed_verify.add(step.deployment_id)
            # Reversed and named once per deployment, not per step.
            makers: dict[str, Any] = {}
            urls = {
                d.pk: makers.setdefault(d.project.slug, _deployment_urls(d.project.slug))(d.pk)
                for d in rows
            }
            titles = {d.pk: deployment_title(d) for d in rows}
            for d in rows:
                title = titles[d.pk]
                kind = "rollback" if d.kind == Deployment.Kind.ROLLBACK else "deployment"
                subject = Subject("deployment", str(d.pk), urls[d.pk])
                env = d.environment.name
                who = f" by {d.requested_by.username}" if d.requested_by_id else ""
                if d.kind == Deployment.Kind.ROLLBACK and not d.requested_by_id:
                    who = " automatically"
                moments = [(d.created_at, f"{title} requested{who}", "requested")]
                if d.started_at:
                    moments.append((d.started_at, f"{title} started", "started"))
                undone_later = (
                    d.status in (D.ROLLED_BACK, D.ROLLING_BACK)
                    and d.finished_at is not None
                    and d.status_changed_at > d.finished_at + timedelta(minutes=1)
                )
                if undone_later:
                    # Finished first, rolled back by someone later: two moments.
                    moments.append((d.finished_at, f"{title} finished", "finished"))
                    outcome = "rolled back" if d.status == D.ROLLED_BACK else "is rolling back"
                    moments.append((d.status_changed_at, f"{title} {outcome}", "undone"))
                elif d.finished_at:
                    moments.append(
                        (d.finished_at, f"{title} {_outcome(d, d.pk in failed_verify)}", "finished")
                    )
                for at, text, what in moments:
                    if inside(at):
                        entries.append(
                            SystemEntry(at, kind, text, subject, env, f"deployment:{d.pk}:{what}")
                        )
            for step in steps:
                d = by_id[step.deployment_id]
                verb = {
                    DeploymentStep.Kind.APPLY: "applied",
                    DeploymentStep.Kind.WAIT: "rolled out",
                    DeploymentStep.Kind.VERIFY: "verified",
                }.get(step.kind, step.kind)
                if step.status == STEP.FAILED:
                    verb = f"{step.get_kind_display().lower()} failed"
                message = f": {step.message}" if step.message and step.status == STEP.FAILED else ""
                entries.append(
                    SystemEntry(
                        step.finished_at,
                        "rollback" if d.kind == Deployment.Kind.ROLLBACK else "deployment",
                        f"{titles[d.pk]}: {step.service_name} (tier {step.tier}) {verb}{message}",
                        Subject("deployment", str(d.pk), urls[d.pk]),
                        d.environment.name,
                        f"step:{step.pk}",
                    )
                )

        def per_release_target(model, person: str):  # noqa: ANN001, ANN202
            """Rows of a model hung on a release target in these environments, in the window."""
            return (
                model.objects.filter(
                    target__release__project_id=project_id,
                    target__environment_id__in=environment_ids,
                )
                .filter(window("created_at"))
                .select_related("target__release__project", "target__environment", person)
                .order_by("-created_at")[:limit]
            )

        def release_entry(row, kind: str, text: str, key: str) -> SystemEntry:  # noqa: ANN001
            r = row.target.release
            return SystemEntry(
                row.created_at,
                kind,
                text,
                Subject("release", str(r.pk), _release_url(r.project.slug, r.pk)),
                row.target.environment.name,
                key,
            )

        if wanted("override"):
            for o in per_release_target(Override, "overridden_by"):
                entries.append(
                    release_entry(
                        o,
                        "override",
                        f"Break-glass: {o.overridden_by.username} overrode the no-go for release "
                        f"{o.target.release.version} in {o.target.environment.name}: {o.reason}",
                        f"override:{o.pk}",
                    )
                )
            for a in per_release_target(RiskAcceptance, "accepted_by"):
                entries.append(
                    release_entry(
                        a,
                        "override",
                        f"{a.accepted_by.username} accepted the risk of gate "
                        f"“{a.item_text[:120]}” for release {a.target.release.version} in "
                        f"{a.target.environment.name}: {a.reason}",
                        f"risk:{a.pk}",
                    )
                )
        if wanted("signoff"):
            for s in per_release_target(Signoff, "user"):
                verb = "approved" if s.decision == Signoff.Decision.APPROVE else "rejected"
                entries.append(
                    release_entry(
                        s,
                        "signoff",
                        f"{s.user.username} {verb} release {s.target.release.version} for "
                        f"{s.target.environment.name} as {s.role}",
                        f"signoff:{s.pk}",
                    )
                )
        if wanted("lock"):
            for lock in (
                EnvironmentLock.objects.filter(environment_id__in=environment_ids)
                .filter(window("locked_at") | window("released_at"))
                .select_related("environment__project", "locked_by", "released_by")
                .order_by("-locked_at")[:limit]
            ):
                env = lock.environment
                url = reverse("environment-detail", args=[env.project.slug, env.name])
                subject = Subject("environment", env.name, url)
                if inside(lock.locked_at):
                    entries.append(
                        SystemEntry(
                            lock.locked_at,
                            "lock",
                            f"Environment {env.name} locked by {lock.locked_by.username}: "
                            f"{lock.reason}",
                            subject,
                            env.name,
                            f"lock:{lock.pk}",
                        )
                    )
                if inside(lock.released_at):
                    who = f" by {lock.released_by.username}" if lock.released_by_id else ""
                    entries.append(
                        SystemEntry(
                            lock.released_at,
                            "lock",
                            f"Environment {env.name} unlocked{who}",
                            subject,
                            env.name,
                            f"unlock:{lock.pk}",
                        )
                    )
        entries.sort(key=lambda e: (e.occurred_at, e.key), reverse=True)
        return entries[:limit]

    def suspects(
        self, project_id: int, environment_ids: list[int], since: datetime, until: datetime
    ) -> list[Suspect]:
        del since  # suspects look back a fixed span from the start
        start = until - timedelta(hours=SUSPECT_HOURS)
        rows = list(
            self._deployments(project_id, environment_ids)
            .filter(kind=Deployment.Kind.DEPLOY, created_at__gte=start, created_at__lte=until)
            .order_by("-created_at")[:50]
        )
        if not rows:
            return []
        ids = [d.pk for d in rows]
        befores: dict[int, dict[str, str]] = {}
        applied: set[int] = set()
        for dep_id, kind, status, service, version_before in DeploymentStep.objects.filter(
            deployment_id__in=ids,
            kind__in=[DeploymentStep.Kind.SNAPSHOT, DeploymentStep.Kind.APPLY],
        ).values_list("deployment_id", "kind", "status", "service_name", "detail__version_before"):
            if kind == DeploymentStep.Kind.SNAPSHOT:
                befores.setdefault(dep_id, {})[service] = version_before or ""
            elif status == STEP.SUCCEEDED:
                applied.add(dep_id)
                befores.setdefault(dep_id, {}).setdefault(service, "")
        # The newest deployment that changed something, per environment: only it can be undone.
        latest: dict[int, int] = {}
        for env_id, dep_id in (
            Deployment.objects.filter(
                environment_id__in=environment_ids,
                kind=Deployment.Kind.DEPLOY,
                steps__kind=DeploymentStep.Kind.APPLY,
                steps__status=STEP.SUCCEEDED,
            )
            .values("environment_id")
            .annotate(last=Max("id"))
            .values_list("environment_id", "last")
        ):
            latest[env_id] = dep_id
        from .strategies import runs_on_worker

        found = []
        link = _deployment_urls(rows[0].project.slug)
        for d in rows:
            blocked = ""
            if d.status not in (D.SUCCEEDED, D.FAILED, D.CANCELLED):
                blocked = f"it is {d.get_status_display().lower()}"
            elif not runs_on_worker(d.strategy):
                blocked = "the pipeline that ran it rolls it back"
            elif d.pk not in applied:
                blocked = "it changed no service"
            elif latest.get(d.environment_id) != d.pk:
                blocked = "a later deployment came after it"
            found.append(
                Suspect(
                    id=f"deployment:{d.pk}",
                    title=deployment_title(d),
                    url=link(d.pk),
                    environment=d.environment.name,
                    version=d.version,
                    status=d.get_status_display(),
                    at=d.started_at or d.created_at,
                    changes=tuple(
                        ServiceChange(service, before or "?", d.version)
                        for service, before in sorted(befores.get(d.pk, {}).items())
                    ),
                    rolled_back=d.status in (D.ROLLED_BACK, D.ROLLING_BACK),
                    can_roll_back=not blocked,
                    rollback_blocked_reason=blocked,
                    kind=d.kind,
                )
            )
        return found

    def roll_back(self, actor: Any, membership: Any, suspect_id: str, reason: str) -> str | None:
        kind, _, raw_id = suspect_id.partition(":")
        if kind != "deployment":
            return None
        pk = ascii_int(raw_id)
        if pk is None:
            raise ValidationError({"suspect": "No such deployment."})
        deployment = (
            Deployment.objects.filter(pk=pk, project=membership.project)
            .select_related("project", "environment")
            .first()
        )
        if deployment is None:
            raise ValidationError({"suspect": "No such deployment in this project."})
        from .services.jobs import request_rollback

        rollback = request_rollback(actor, membership, deployment, reason)
        return _url(rollback, deployment.project.slug)

    def postmortem_facts(
        self, project_id: int, environment_ids: list[int], since: datetime, until: datetime
    ) -> Facts:
        facts = Facts()
        deployments = list(
            self._deployments(project_id, environment_ids)
            .filter(created_at__gte=since - timedelta(hours=SUSPECT_HOURS), created_at__lte=until)
            .order_by("created_at")
        )
        facts.sections["Deployments and rollbacks"] = [
            f"[{deployment_title(d)}]({_url(d, d.project.slug)}): {d.get_status_display().lower()}"
            for d in deployments
        ]
        release_ids = {d.release_id for d in deployments}
        lines = []
        for o in Override.objects.filter(target__release_id__in=release_ids).select_related(
            "target__release", "target__environment", "overridden_by"
        ):
            lines.append(
                f"Break-glass override of release {o.target.release.version} in "
                f"{o.target.environment.name} by {o.overridden_by.username}: {o.reason}"
            )
        for a in RiskAcceptance.objects.filter(target__release_id__in=release_ids).select_related(
            "target__release", "target__environment", "accepted_by"
        ):
            lines.append(
                f"CONDITIONAL gate “{a.item_text}” of release {a.target.release.version} accepted "
                f"in {a.target.environment.name} by {a.accepted_by.username}: {a.reason}"
            )
        for w in WarningAcknowledgement.objects.filter(
            target__release_id__in=release_ids
        ).select_related("target__release", "target__environment", "acknowledged_by"):
            lines.append(
                f"WARNING gate “{w.item_text}” of release {w.target.release.version} acknowledged "
                f"in {w.target.environment.name} by {w.acknowledged_by.username}"
            )
        facts.sections["Gates overridden or acknowledged"] = lines
        facts.sections["Checklist items skipped or marked N/A"] = self._skipped_items(release_ids)
        return facts

    def _skipped_items(self, release_ids: set[int]) -> list[str]:
        from checklists.models import RunItem

        from .models import ReleaseTarget

        run_ids = list(
            ReleaseTarget.runs.through.objects.filter(
                releasetarget__release_id__in=release_ids
            ).values_list("run_id", flat=True)
        )
        lines = []
        for item in (
            RunItem.objects.filter(run_id__in=run_ids)
            .exclude(state=RunItem.State.DONE)
            .select_related("item", "run")
            .order_by("run_id", "id")
        ):
            text = " ".join(item.item.text.split())[:200]
            if item.state == RunItem.State.NA:
                lines.append(f"N/A: “{text}” — {item.na_reason or 'no reason given'}")
            else:
                lines.append(f"Left open: “{text}”")
        return lines


def on_deployment_event(event: Any) -> None:
    """After commit of a deployment's event: a deployment whose verification failed, or that is
    being rolled back automatically, opens or suggests an incident in its environment (per the
    environment's policy, one open incident per deployment)."""
    if event.verb != "deployment.status_changed":
        return
    status = (event.after or {}).get("status")
    if status not in (D.FAILED, D.ROLLING_BACK):
        return
    deployment = (
        Deployment.objects.filter(pk=event.object_id, kind=Deployment.Kind.DEPLOY)
        .select_related("environment__project", "project")
        .first()
    )
    if deployment is None:
        return
    verify_failed = DeploymentStep.objects.filter(
        deployment=deployment, kind=DeploymentStep.Kind.VERIFY, status=STEP.FAILED
    ).exists()
    automatic = status == D.ROLLING_BACK and event.actor_id is None
    if not (verify_failed or automatic):
        return
    title = deployment_title(deployment)
    what = "failed verification" if verify_failed else "failed"
    if automatic:
        what += " and is being rolled back automatically"
    reason = (event.after or {}).get("reason") or ""
    from monitoring.incidents import auto

    service_ids = list(
        DeploymentStep.objects.filter(
            deployment=deployment, status=STEP.FAILED, service_id__isnull=False
        ).values_list("service_id", flat=True)
    )
    auto.report(
        deployment.environment,
        cause=f"deployment:{deployment.pk}",
        title=f"{title} {what}"[:200],
        text=f"{title} {what}" + (f": {reason}" if reason else ""),
        subject={
            "type": "deployment",
            "id": str(deployment.pk),
            "url": _url(deployment, deployment.project.slug),
        },
        services_ids=service_ids,
    )
