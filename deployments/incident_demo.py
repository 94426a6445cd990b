"""Demo data for incident response: Acme Shop's staging opens an incident when a deployment
fails (the demo's "bad" tag), production suggests one; and a resolved P2 incident in staging
from two days ago, with a full timeline, its suspect deployment and a reviewed postmortem with
one open action item. Lives here because the suspect is a deployment (monitoring may not know
of deployments). Idempotent: nothing is written once the demo incident exists."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from monitoring.incidents import postmortems
from monitoring.incidents import services as incidents
from monitoring.incidents.models import AutoIncidentPolicy, Incident, TimelineEntry
from releasecenter.models import Membership

from .models import Deployment, DeploymentStep, Release

DEMO_TITLE = "Checkout slow after catalog search rollout"
SUSPECT_VERSION = "1.3.1"


def seed(project) -> None:  # noqa: ANN001
    for env in project.environments.all():
        AutoIncidentPolicy.objects.get_or_create(
            environment=env,
            defaults={
                "mode": AutoIncidentPolicy.Mode.OPEN
                if env.name == "staging"
                else AutoIncidentPolicy.Mode.SUGGEST,
                "severity": "P2" if env.name == "staging" else "P1",
            },
        )
    if Incident.objects.filter(project=project, title=DEMO_TITLE).exists():
        return
    now = timezone.now()
    started = now - timedelta(days=2, hours=3)
    deployed = started - timedelta(minutes=25)
    # The demo project was created seconds ago; its history (this incident) is older.
    type(project).objects.filter(pk=project.pk, created_at__gt=deployed - timedelta(days=1)).update(
        created_at=deployed - timedelta(days=1)
    )
    staging = project.environments.filter(name="staging").first()
    people = {
        m.role: m
        for m in Membership.objects.filter(project=project).select_related("user", "project")
    }
    lead, engineer = people.get(Membership.Role.LEAD), people.get(Membership.Role.ENGINEER)
    if staging is None or lead is None or engineer is None:
        return
    catalog = project.services.filter(name="catalog-service").first()
    release, _ = Release.objects.get_or_create(
        project=project,
        version=SUSPECT_VERSION,
        defaults={
            "commit_sha": "9b1e07c4aa21",
            "notes": "Catalog search: new ranking.",
            "created_by": engineer.user,
            "created_at": deployed - timedelta(hours=2),
        },
    )
    suspect = Deployment.objects.create(
        project=project,
        release=release,
        environment=staging,
        strategy="kubernetes",
        status=Deployment.Status.SUCCEEDED,
        version=SUSPECT_VERSION,
        requested_by=engineer.user,
        created_at=deployed,
        status_changed_at=deployed + timedelta(minutes=3),
        started_at=deployed,
        finished_at=deployed + timedelta(minutes=3),
        reason="succeeded",
    )
    if catalog is not None:
        for offset, kind, detail in (
            (0, DeploymentStep.Kind.SNAPSHOT, {"version_before": "1.3.0"}),
            (1, DeploymentStep.Kind.APPLY, {}),
            (2, DeploymentStep.Kind.WAIT, {}),
            (3, DeploymentStep.Kind.VERIFY, {}),
        ):
            DeploymentStep.objects.create(
                deployment=suspect,
                service=catalog,
                service_name=catalog.name,
                tier=catalog.tier,
                kind=kind,
                status=DeploymentStep.Status.SUCCEEDED,
                started_at=deployed + timedelta(seconds=40 * offset),
                finished_at=deployed + timedelta(seconds=40 * offset + 30),
                detail=detail,
            )
    # What the on-call engineer did about it: the rollback, 12 minutes in.
    rolled_at = started + timedelta(minutes=12)
    rollback = Deployment.objects.create(
        project=project,
        release=release,
        environment=staging,
        kind=Deployment.Kind.ROLLBACK,
        rollback_of=suspect,
        strategy="kubernetes",
        status=Deployment.Status.SUCCEEDED,
        version="1.3.0",
        requested_by=lead.user,
        created_at=rolled_at,
        status_changed_at=rolled_at + timedelta(minutes=2),
        started_at=rolled_at,
        finished_at=rolled_at + timedelta(minutes=2),
        reason="rolled back from the incident",
    )
    Deployment.objects.filter(pk=suspect.pk).update(
        status=Deployment.Status.ROLLED_BACK, status_changed_at=rolled_at + timedelta(minutes=2)
    )
    if catalog is not None:
        DeploymentStep.objects.create(
            deployment=rollback,
            service=catalog,
            service_name=catalog.name,
            tier=catalog.tier,
            kind=DeploymentStep.Kind.APPLY,
            status=DeploymentStep.Status.SUCCEEDED,
            started_at=rolled_at,
            finished_at=rolled_at + timedelta(minutes=1),
        )
    incident = incidents.open_incident(
        engineer.user,
        engineer,
        title=DEMO_TITLE,
        severity="P2",
        environments=[staging],
        services=[catalog] if catalog else [],
        summary="Checkout pages took **4–6 s** in staging; search requests timed out.",
        started_at=started,
    )
    incidents.acknowledge_incident(lead.user, lead, incident)
    for minutes, author, kind, text in (
        (4, engineer, "hypothesis", "Search ranking change in 1.3.1 adds a query per product?"),
        (9, lead, "decision", "Roll back catalog-service in staging rather than hotfix."),
        (12, engineer, "action", "Rolled catalog-service back to 1.3.0."),
        (15, lead, "update", "Staging checkout back to normal; production never had 1.3.1."),
    ):
        incidents.add_timeline_entry(
            author.user,
            author,
            incident,
            kind=kind,
            text=text,
            occurred_at=started + timedelta(minutes=minutes),
        )
    incidents.change_status(lead.user, lead, incident, "identified", "N+1 query in ranking")
    incidents.change_status(lead.user, lead, incident, "resolved", "Rolled back; latency normal")
    # The demo's story took 20 minutes two days ago, not the seconds seeding it does now.
    Incident.objects.filter(pk=incident.pk).update(
        acknowledged_at=started + timedelta(minutes=3),
        resolved_at=started + timedelta(minutes=20),
        status_changed_at=started + timedelta(minutes=20),
    )
    TimelineEntry.objects.filter(
        incident=incident, kind__in=["acknowledged", "status", "postmortem"]
    ).update(occurred_at=started + timedelta(minutes=20))
    TimelineEntry.objects.filter(incident=incident, kind="acknowledged").update(
        occurred_at=started + timedelta(minutes=3)
    )
    incident.refresh_from_db()
    TimelineEntry.objects.filter(incident=incident, kind="opened").update(occurred_at=started)
    # Written again now that the story's times are in place.
    postmortem = postmortems.prefill(incident, announce=False)
    postmortems.update_postmortem(
        lead.user,
        lead,
        postmortem,
        version=None,
        impact="P2 in staging (catalog-service) for 20 minutes: checkout pages took 4–6 s and "
        "search timed out; production was not affected.",
        root_cause="The new ranking in 1.3.1 loaded each product's stock in its own query.",
        went_well="The suspect deployment was on the incident page; rollback took 3 minutes.",
        went_badly="No latency check on search in staging, so a person noticed first.",
    )
    postmortems.add_action_item(
        lead.user,
        lead,
        postmortem,
        text="Add a search latency check to staging",
        owner=engineer.user,
        due_date=(now + timedelta(days=5)).date(),
    )
    postmortems.mark_reviewed(lead.user, lead, postmortem)
