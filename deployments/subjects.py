"""How deployments' events read in a feed (the overview's "Recent activity", a release's
timeline): each line names its deployment, release or environment and links to it —
"Deployment #12 of 1.5.0 to production failed verification". Registered with
releasecenter.subjects in DeploymentsConfig.ready()."""

from __future__ import annotations

from django.urls import reverse

from releasecenter.models import AuditEvent, Environment, Project
from releasecenter.subjects import Line
from releasecenter.validation import ascii_int

from .incident_source import deployment_title
from .models import Deployment, DeploymentStep, Release

STATUS_PHRASES = {
    "queued": "queued",
    "running": "started",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "was cancelled",
    "rolling_back": "is being rolled back",
    "rolled_back": "was rolled back",
}


def _id(value: str) -> int | None:
    return ascii_int(value)


def describe_events(events: list[AuditEvent]) -> dict[int, Line | None]:
    slugs = dict(
        Project.objects.filter(pk__in={e.project_id for e in events if e.project_id}).values_list(
            "pk", "slug"
        )
    )
    deployment_ids = {
        _id(e.object_id) for e in events if e.object_type == "deployments.deployment"
    } - {None}
    deployments = {
        d.pk: d
        for d in Deployment.objects.filter(pk__in=deployment_ids).select_related(
            "environment", "project"
        )
    }
    failed_verify = set(
        DeploymentStep.objects.filter(
            deployment_id__in=deployment_ids,
            kind=DeploymentStep.Kind.VERIFY,
            status=DeploymentStep.Status.FAILED,
        ).values_list("deployment_id", flat=True)
    )
    release_ids = {
        _id(e.topic.partition(":")[2]) for e in events if e.topic.startswith("release:")
    } - {None}
    releases = {r.pk: r for r in Release.objects.filter(pk__in=release_ids)}
    env_ids = {_id(e.object_id) for e in events if e.object_type == "releasecenter.environment"} - {
        None
    }
    environments = {e.pk: e.name for e in Environment.objects.filter(pk__in=env_ids)}
    lines: dict[int, Line | None] = {}
    for event in events:
        data, after, before = event.data or {}, event.after or {}, event.before or {}
        slug = slugs.get(event.project_id)
        prefix = event.verb.partition(".")[0]
        if prefix == "deployment":
            if event.verb == "deployment.progress" or event.topic.startswith("project:"):
                # Progress ticks belong on the deployment's page; the project-topic copy of a
                # status change repeats the one on the deployment's topic.
                lines[event.pk] = None
                continue
            d = deployments.get(_id(event.object_id) or 0)
            if d is None:
                lines[event.pk] = Line(f"Deployment #{event.object_id}")
                continue
            title = deployment_title(d)
            url = reverse("deployment-detail", args=[d.project.slug, d.pk])
            if event.verb == "deployment.created":
                lines[event.pk] = Line(f"{title} requested", url)
            elif event.verb == "deployment.status_changed":
                status = after.get("status", "")
                phrase = STATUS_PHRASES.get(status, status.replace("_", " "))
                if status == "failed" and d.pk in failed_verify:
                    phrase = "failed verification"
                if status == "rolling_back" and event.actor_id is None:
                    phrase = "is being rolled back automatically"
                reason = after.get("reason") or ""
                tail = f": {reason}" if reason and status in ("failed", "cancelled") else ""
                lines[event.pk] = Line(f"{title} {phrase}{tail}", url)
            elif event.verb == "deployment.cancel_requested":
                lines[event.pk] = Line(f"{title}: cancel requested", url)
            else:
                lines[event.pk] = Line(f"{title}: {event.verb.partition('.')[2]}", url)
        elif prefix == "release":
            release = releases.get(_id(event.topic.partition(":")[2]) or 0)
            if release is None or not slug:
                continue
            name = f"Release {release.version}"
            url = reverse("release-detail", args=[slug, release.pk])
            env = data.get("environment") or after.get("environment") or ""
            verb = event.verb
            if verb == "release.created":
                text = f"{name} created"
            elif verb == "release.updated":
                text = f"{name} changed"
            elif verb == "release.status_changed":
                old = str(before.get("status", "")).replace("_", " ")
                new = str(after.get("status", "")).replace("_", " ")
                text = f"{name} in {env}: {old} → {new}"
            elif verb == "release.signed_off":
                decision = "approved" if after.get("decision") == "approve" else "rejected"
                text = f"{name} {decision} for {env} as {after.get('role', '')}"
            elif verb == "release.signoff_withdrawn":
                text = f"{name}: sign-off as {data.get('role', '')} in {env} withdrawn"
            elif verb == "release.risk_accepted":
                text = f"{name} in {env}: risk of “{after.get('item', '')}” accepted"
            elif verb == "release.warning_acknowledged":
                text = f"{name} in {env}: warning “{after.get('item', '')}” acknowledged"
            elif verb == "release.overridden":
                text = f"Break-glass: {name} went ahead in {env} despite a no-go: " + str(
                    after.get("reason", "")
                )
            elif verb == "release.follow_up_resolved":
                text = f"{name}: follow-up resolved"
            elif verb == "release.commit_reset":
                text = (
                    f"{name} in {env}: {data.get('summary', '')}, because the commit changed "
                    f"from {str(data.get('old_commit', ''))[:12]} to "
                    f"{str(data.get('new_commit', ''))[:12]}"
                )
            else:
                text = f"{name}: {verb.partition('.')[2].replace('_', ' ')}"
            lines[event.pk] = Line(text, url)
        elif prefix == "environment":
            name = (
                after.get("environment")
                or data.get("environment")
                or environments.get(_id(event.object_id) or 0)
                or after.get("name")
                or ""
            )
            if not name or not slug:
                continue
            url = reverse("environment-detail", args=[slug, name])
            phrase = {
                "environment.created": "added",
                "environment.updated": "changed",
                "environment.locked": f"locked: {after.get('reason', '')}",
                "environment.unlocked": "unlocked"
                + (f": {after['reason']}" if after.get("reason") else ""),
                "environment.policy_updated": "deployment policy changed",
                "environment.signoffs_required": "required sign-offs changed",
                "environment.window_added": f"{after.get('kind', '')} window added: "
                f"{after.get('window', '')}",
                "environment.window_removed": "time window removed",
                "environment.deploy_target_saved": "deploy target saved",
                "environment.monitoring_updated": "monitoring settings changed",
                "environment.target_set": "performance target set",
            }.get(event.verb, event.verb.partition(".")[2].replace("_", " "))
            lines[event.pk] = Line(f"Environment {name} {phrase}", url)
    return lines
