"""Postmortems: prefilled from the record when an incident is resolved, completed by people,
reviewed (which P0 and P1 incidents need before they close), exported as Markdown.

The record (timeline, deployments with versions, gates overridden or acknowledged, checklist
items skipped or marked N/A, checks that failed) is written once at resolution, as the facts
stood; if the incident flares up and is resolved again it is written afresh. What people wrote
(root cause, what went well or badly, action items) is kept.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from releasecenter import events, incident_hooks
from releasecenter.access import require_role
from releasecenter.models import Membership

from . import selectors, timeline
from .models import ActionItem, Incident, Postmortem, TimelineEntry

TEXT_FIELDS = ["summary", "impact", "root_cause", "went_well", "went_badly"]
MAX_TEXT = 50_000


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def _record(incident: Incident) -> str:
    env_ids = selectors.environment_ids(incident)
    until = incident.resolved_at or timezone.now()
    since = incident.started_at - timeline.LOOKBACK
    items, _ = timeline.merged(incident, environment_ids=env_ids, limit=None)
    parts = [timeline.as_markdown(incident, items).rstrip()]
    suspects = selectors.suspects(incident)
    lines = []
    for s in suspects:
        changes = ", ".join(f"{c.service} {c.before} → {c.after}" for c in s.changes)
        lines.append(
            f"- [{s.title}]({s.url}), {s.status.lower()}: {changes or 'no service changed'}"
        )
    parts.append("## Suspect deployments\n\n" + ("\n".join(lines) or "_None in the hours before._"))
    facts = incident_hooks.postmortem_facts(incident.project_id, env_ids, since, until)
    for title, facts_lines in facts.sections.items():
        body = "\n".join(f"- {line}" for line in facts_lines) or "_None._"
        parts.append(f"## {title}\n\n{body}")
    failed = [i for i in items if i.kind == "check" and "failing" in i.text]
    body = "\n".join(
        f"- {i.occurred_at:%Y-%m-%d %H:%M %Z}: [{i.text}]({i.subject['url']})"
        if i.subject and i.subject.get("url")
        else f"- {i.occurred_at:%Y-%m-%d %H:%M %Z}: {i.text}"
        for i in failed
    )
    parts.append("## Checks that failed\n\n" + (body or "_None._"))
    return "\n\n".join(parts) + "\n"


def prefill(incident: Incident, *, announce: bool = True) -> Postmortem:
    """Create the postmortem (or rewrite its record) from what happened. Called by
    change_status inside its transaction when the incident is resolved."""
    envs = ", ".join(incident.environments.values_list("name", flat=True))
    services = ", ".join(incident.services.values_list("name", flat=True)) or "no service named"
    resolved = incident.resolved_at or timezone.now()
    impact = (
        f"{incident.severity} in {envs} ({services}) from {incident.started_at:%Y-%m-%d %H:%M %Z} "
        f"to {resolved:%Y-%m-%d %H:%M %Z}: {_duration(resolved - incident.started_at)}."
    )
    postmortem = Postmortem.objects.filter(incident=incident).first()
    if postmortem is None:
        postmortem = Postmortem(incident=incident, summary=incident.summary, impact=impact)
    else:
        postmortem.impact = postmortem.impact or impact
        postmortem.version += 1
    postmortem.record = _record(incident)
    postmortem.updated_at = timezone.now()
    postmortem.save()
    if not announce:
        return postmortem
    TimelineEntry.objects.create(
        incident=incident,
        kind=TimelineEntry.Kind.POSTMORTEM,
        source=TimelineEntry.Source.SYSTEM,
        text=f"Postmortem of {incident.reference} prefilled from the record",
        subject_type="postmortem",
        subject_id=str(incident.pk),
        subject_url=postmortem_url(incident),
    )
    return postmortem


def postmortem_url(incident: Incident) -> str:
    from django.urls import reverse

    return reverse("incident-postmortem", args=[incident.project.slug, incident.number])


def _publish(postmortem: Postmortem, verb: str, actor: Any, before: Any, after: Any) -> None:
    incident = postmortem.incident
    data = {
        "incident_id": incident.pk,
        "reference": incident.reference,
        "title": incident.title,
        "url": postmortem_url(incident),
        "text": f"Postmortem of {incident.reference} {incident.title}",
    }
    event = events.publish(
        incident.project.topic,
        verb,
        project=incident.project_id,
        actor=actor,
        obj=postmortem,
        before=before,
        after=after,
        data=data,
    )
    events.publish(incident.topic, verb, obj=postmortem, data={**data, "event_id": event.pk})


def _clean(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationError({field: "Give text."})
    if "\x00" in value:
        raise ValidationError({field: "Text may not contain NUL bytes."})
    if len(value) > MAX_TEXT:
        raise ValidationError({field: f"At most {MAX_TEXT} characters."})
    return value.strip()


@transaction.atomic
def update_postmortem(
    actor: Any,
    membership: Membership,
    postmortem: Postmortem,
    *,
    version: int | None,
    **fields: Any,
) -> Postmortem:
    require_role(membership, Membership.Role.ENGINEER)
    postmortem = (
        Postmortem.objects.select_for_update(of=("self",))
        .select_related("incident__project")
        .get(pk=postmortem.pk)
    )
    if version is not None and int(version) != postmortem.version:
        from releasecenter.services import Conflict

        raise Conflict("Someone changed the postmortem since you loaded it; reload and try again.")
    before = {f: getattr(postmortem, f) for f in TEXT_FIELDS}
    for field, value in fields.items():
        if field not in TEXT_FIELDS:
            raise ValidationError({field: "This field cannot be changed here."})
        setattr(postmortem, field, _clean(value, field))
    postmortem.version = F("version") + 1
    postmortem.updated_at = timezone.now()
    postmortem.save()
    postmortem.refresh_from_db(fields=["version"])
    _publish(
        postmortem,
        "postmortem.updated",
        actor,
        before,
        {f: getattr(postmortem, f) for f in TEXT_FIELDS},
    )
    return postmortem


@transaction.atomic
def mark_reviewed(actor: Any, membership: Membership, postmortem: Postmortem) -> Postmortem:
    """A lead marks the postmortem reviewed: P0 and P1 incidents may close after this."""
    require_role(membership, Membership.Role.LEAD)
    postmortem = (
        Postmortem.objects.select_for_update(of=("self",))
        .select_related("incident__project")
        .get(pk=postmortem.pk)
    )
    if postmortem.reviewed_at is not None:
        return postmortem
    if not postmortem.root_cause.strip():
        raise ValidationError({"root_cause": "Write the root cause before marking it reviewed."})
    postmortem.reviewed_at = timezone.now()
    postmortem.reviewed_by = actor
    postmortem.save(update_fields=["reviewed_at", "reviewed_by"])
    incident = postmortem.incident
    TimelineEntry.objects.create(
        incident=incident,
        kind=TimelineEntry.Kind.POSTMORTEM,
        source=TimelineEntry.Source.SYSTEM,
        text=f"Postmortem of {incident.reference} marked reviewed by {actor.username}",
        author=actor,
        subject_type="postmortem",
        subject_id=str(incident.pk),
        subject_url=postmortem_url(incident),
    )
    _publish(postmortem, "postmortem.reviewed", actor, None, {"reviewed_by": actor.username})
    return postmortem


@transaction.atomic
def add_action_item(
    actor: Any,
    membership: Membership,
    postmortem: Postmortem,
    *,
    text: Any,
    owner: Any = None,
    due_date: Any = None,
) -> ActionItem:
    require_role(membership, Membership.Role.ENGINEER)
    text = " ".join(_clean(text, "text").split())
    if not text:
        raise ValidationError({"text": "Say what is to be done."})
    if len(text) > 500:
        raise ValidationError({"text": "At most 500 characters."})
    project = postmortem.incident.project
    user = None
    if owner:
        user = (
            get_user_model()
            .objects.filter(
                username=owner if isinstance(owner, str) else owner.username,
                memberships__project=project,
            )
            .first()
        )
        if user is None:
            raise ValidationError({"owner": "Choose a member of the project."})
    if isinstance(due_date, str) and due_date:
        try:
            due_date = date.fromisoformat(due_date)
        except ValueError:
            raise ValidationError({"due_date": "Give a date, e.g. 2026-05-01."}) from None
    elif due_date in ("", None):
        due_date = None
    elif not isinstance(due_date, date):
        raise ValidationError({"due_date": "Give a date."})
    item = ActionItem.objects.create(
        postmortem=postmortem, text=text, owner=user, due_date=due_date
    )
    _publish(
        postmortem,
        "postmortem.action_added",
        actor,
        None,
        {"text": text, "owner": user.username if user else None, "due_date": str(due_date or "")},
    )
    return item


@transaction.atomic
def complete_action_item(
    actor: Any, membership: Membership, item: ActionItem, done: bool = True
) -> ActionItem:
    require_role(membership, Membership.Role.ENGINEER)
    item = (
        ActionItem.objects.select_for_update(of=("self",))
        .select_related("postmortem__incident__project")
        .get(pk=item.pk)
    )
    before = {"done": item.done_at is not None}
    item.done_at = timezone.now() if done else None
    item.save(update_fields=["done_at"])
    _publish(
        item.postmortem,
        "postmortem.action_done" if done else "postmortem.action_reopened",
        actor,
        before,
        {"done": done, "text": item.text},
    )
    return item


def overdue_actions(project_id: int, today: date | None = None) -> list[ActionItem]:
    today = today or timezone.localdate()
    return list(
        ActionItem.objects.filter(
            postmortem__incident__project_id=project_id, done_at__isnull=True, due_date__lt=today
        )
        .select_related("owner", "postmortem__incident__project")
        .order_by("due_date", "id")[:20]
    )


def as_markdown(incident: Incident) -> str | None:
    postmortem = Postmortem.objects.filter(incident=incident).select_related("reviewed_by").first()
    if postmortem is None:
        return None
    reviewed = (
        f"Reviewed by {postmortem.reviewed_by.username if postmortem.reviewed_by_id else 'someone'} "
        f"on {postmortem.reviewed_at:%Y-%m-%d}"
        if postmortem.reviewed_at
        else "Not reviewed yet"
    )
    actions = []
    for a in postmortem.actions.select_related("owner"):
        box = "x" if a.done_at else " "
        owner = f" — {a.owner.username}" if a.owner_id else ""
        due = f", due {a.due_date:%Y-%m-%d}" if a.due_date else ""
        actions.append(f"- [{box}] {a.text}{owner}{due}")

    def section(title: str, text: str) -> str:
        return f"## {title}\n\n{text.strip() or '_To be written._'}"

    return (
        "\n\n".join(
            [
                f"# Postmortem: {incident.reference} {incident.title}",
                f"Severity {incident.severity} · status {incident.status} · {reviewed}",
                section("Summary", postmortem.summary),
                section("Impact", postmortem.impact),
                section("Root cause", postmortem.root_cause),
                section("What went well", postmortem.went_well),
                section("What went badly", postmortem.went_badly),
                "## Action items\n\n" + ("\n".join(actions) or "_None yet._"),
                postmortem.record.strip(),
            ]
        )
        + "\n"
    )
