"""Incidents from what the system sees, per environment policy (off, suggest, open).

A health check turning critical (failing) or a performance target breached is reported here by
this app's own event listener; ``deployments`` reports a deployment whose verification failed
or that was rolled back automatically by calling ``report`` (it may import this app).

One open incident per cause ("check:12", "deployment:40"): a cause that already has an open
incident adds a timeline entry to it; a pending suggestion is not repeated either.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from releasecenter import events
from releasecenter.access import require_role
from releasecenter.models import AuditEvent, Environment, Membership, Project

from . import services
from .models import SEVERITIES, AutoIncidentPolicy, Incident, IncidentSuggestion

DEFAULT_MODE = AutoIncidentPolicy.Mode.SUGGEST
DEFAULT_SEVERITY = "P2"


def policy_of(environment: Environment) -> tuple[str, str]:
    row = AutoIncidentPolicy.objects.filter(environment=environment).first()
    return (row.mode, row.severity) if row else (DEFAULT_MODE, DEFAULT_SEVERITY)


def policies_for(project: Project) -> list[tuple[Environment, str, str]]:
    rows = {
        p.environment_id: p for p in AutoIncidentPolicy.objects.filter(environment__project=project)
    }
    result = []
    for env in project.environments.all():
        row = rows.get(env.pk)
        result.append(
            (env, row.mode if row else DEFAULT_MODE, row.severity if row else DEFAULT_SEVERITY)
        )
    return result


@transaction.atomic
def set_policy(
    actor: Any, membership: Membership, environment: Environment, *, mode: str, severity: str
) -> AutoIncidentPolicy:
    require_role(membership, Membership.Role.ADMIN)
    if environment.project_id != membership.project_id:
        raise ValidationError({"environment": "No such environment in this project."})
    if mode not in AutoIncidentPolicy.Mode.values:
        raise ValidationError({"mode": f"Use one of {', '.join(AutoIncidentPolicy.Mode.values)}."})
    if severity not in SEVERITIES:
        raise ValidationError({"severity": f"Use one of {', '.join(SEVERITIES)}."})
    before = policy_of(environment)
    row, _ = AutoIncidentPolicy.objects.update_or_create(
        environment=environment,
        defaults={"mode": mode, "severity": severity, "updated_at": timezone.now()},
    )
    events.publish(
        environment.project.topic,
        "incident.auto_policy_changed",
        project=environment.project_id,
        actor=actor,
        obj=environment,
        before={"mode": before[0], "severity": before[1]},
        after={"mode": mode, "severity": severity},
        data={"text": f"Incidents from what the system sees in {environment.name}: {mode}"},
    )
    return row


@transaction.atomic
def report(
    environment: Environment,
    *,
    cause: str,
    title: str,
    text: str,
    subject: dict[str, str] | None = None,
    services_ids: list[int] | None = None,
) -> Incident | IncidentSuggestion | None:
    """Something went wrong in an environment. Returns what it led to, per the policy."""
    project = environment.project
    existing = Incident.objects.open().filter(project=project, cause=cause).first()
    if existing is not None:
        services.record_signal(existing, text, subject=subject)
        return existing
    mode, severity = policy_of(environment)
    if mode == AutoIncidentPolicy.Mode.OFF:
        return None
    if mode == AutoIncidentPolicy.Mode.OPEN:
        return services.open_incident(
            None,
            None,
            project=project,
            title=title[:200],
            severity=severity,
            environments=[environment],
            services=list(project.services.filter(pk__in=services_ids or [])),
            cause=cause,
            opened_because=text,
            subject=subject,
        )
    pending = IncidentSuggestion.objects.filter(
        project=project, cause=cause, incident__isnull=True, dismissed_at__isnull=True
    ).first()
    if pending is not None:
        return pending
    try:
        with transaction.atomic():
            suggestion = IncidentSuggestion.objects.create(
                project=project,
                environment=environment,
                cause=cause,
                title=title[:200],
                severity=severity,
                text=text,
                subject_url=(subject or {}).get("url", ""),
                service_ids=services_ids or [],
            )
    except IntegrityError:
        return IncidentSuggestion.objects.filter(
            project=project, cause=cause, incident__isnull=True, dismissed_at__isnull=True
        ).first()
    events.publish(
        project.topic,
        "incident.suggested",
        project=project,
        obj=suggestion,
        data={
            "text": f"Suggested incident in {environment.name}: {title}",
            "url": reverse("incident-list", args=[project.slug]),
        },
    )
    return suggestion


@transaction.atomic
def open_suggestion(actor: Any, membership: Membership, suggestion: IncidentSuggestion) -> Incident:
    """One click: open the incident a suggestion proposes (or the one its cause already has)."""
    require_role(membership, Membership.Role.ENGINEER)
    suggestion = IncidentSuggestion.objects.select_for_update().get(pk=suggestion.pk)
    if suggestion.project_id != membership.project_id:
        raise ValidationError("No such suggestion in this project.")
    if suggestion.incident_id:
        return suggestion.incident
    if suggestion.dismissed_at:
        raise ValidationError("This suggestion was dismissed.")
    existing = (
        Incident.objects.open()
        .filter(project_id=suggestion.project_id, cause=suggestion.cause)
        .first()
    )
    incident = existing or services.open_incident(
        actor,
        membership,
        title=suggestion.title,
        severity=suggestion.severity,
        environments=[suggestion.environment],
        services=list(membership.project.services.filter(pk__in=suggestion.service_ids)),
        summary=suggestion.text,
        started_at=suggestion.created_at,
    )
    if not existing:
        Incident.objects.filter(pk=incident.pk).update(cause=suggestion.cause)
        incident.cause = suggestion.cause
    suggestion.incident = incident
    suggestion.save(update_fields=["incident"])
    return incident


@transaction.atomic
def dismiss_suggestion(actor: Any, membership: Membership, suggestion: IncidentSuggestion) -> None:
    require_role(membership, Membership.Role.ENGINEER)
    updated = IncidentSuggestion.objects.filter(
        pk=suggestion.pk, incident__isnull=True, dismissed_at__isnull=True
    ).update(dismissed_at=timezone.now(), dismissed_by=actor)
    if updated:
        events.publish(
            suggestion.project.topic,
            "incident.suggestion_dismissed",
            project=suggestion.project_id,
            actor=actor,
            obj=suggestion,
            data={"text": f"Dismissed the suggested incident “{suggestion.title}”"},
        )


# --- This app's own signals -------------------------------------------------------------------


def on_project_event(event: AuditEvent) -> None:
    """After commit of every project event: a check that turned failing or a breached target."""
    if event.verb not in ("check.failing", "check.recovered", "target.breached"):
        return
    data = event.data or {}
    environment = (
        Environment.objects.select_related("project")
        .filter(project_id=event.project_id, name=data.get("environment", ""))
        .first()
    )
    if environment is None:
        return
    slug = environment.project.slug
    if event.verb.startswith("check."):
        check_id = data.get("check_id") or event.object_id
        cause = f"check:{check_id}"
        url = reverse("check-detail", args=[slug, check_id])
        subject = {"type": "check", "id": str(check_id), "url": url}
        name = data.get("name", f"#{check_id}")
        summary = f": {data['summary']}" if data.get("summary") else ""
        if event.verb == "check.recovered":
            existing = (
                Incident.objects.open().filter(project_id=event.project_id, cause=cause).first()
            )
            if existing is not None:
                services.record_signal(
                    existing, f"Check “{name}” in {environment.name} recovered", subject=subject
                )
            return
        service = data.get("service")
        service_ids = list(
            environment.project.services.filter(name=service).values_list("pk", flat=True)
        )
        report(
            environment,
            cause=cause,
            title=f"Check “{name}” failing in {environment.name}",
            text=f"Check “{name}” in {environment.name} started failing{summary}",
            subject=subject,
            services_ids=service_ids,
        )
        return
    metric = data.get("metric", "target").replace("_", " ")
    report(
        environment,
        cause=f"target:{event.object_id}",
        title=f"{metric.capitalize()} target breached in {environment.name}",
        text=f"Performance target “{metric}” in {environment.name} breached "
        f"(value {data.get('value')}, alert threshold {data.get('alert_threshold')})",
        subject={
            "type": "environment",
            "id": environment.name,
            "url": reverse("environment-monitoring", args=[slug, environment.name]),
        },
    )
