"""An incident's one timeline: what people wrote and what happened to the incident (rows of
``TimelineEntry``), merged with what Release Center saw in the affected environments from an
hour before ``started_at`` to the end (sources registered with ``releasecenter.incident_hooks``;
this app registers its own for health checks).

The page shows a window of the newest entries and pages back with a time cursor, so each read
costs the same few queries however long the incident's history is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from releasecenter import incident_hooks
from releasecenter.incident_hooks import Subject, SystemEntry
from releasecenter.models import AuditEvent, Project

from .models import Incident, TimelineEntry

LOOKBACK = timedelta(hours=1)
WINDOW = 100

PERSON_KINDS = {k.value: k.label for k in TimelineEntry.PERSON_KINDS}
INCIDENT_KINDS = {k.value: k.label for k in TimelineEntry.Kind if k.value not in PERSON_KINDS}
# The filter offered on the page and the API: every kind of entry, people's first.
FILTER_KINDS = {**PERSON_KINDS, **INCIDENT_KINDS, **incident_hooks.KINDS}


@dataclass(frozen=True)
class Item:
    occurred_at: datetime
    kind: str
    source: str  # "person" or "system"
    text: str
    subject: dict[str, str] | None
    author: str | None = None
    entry_id: int | None = None
    author_id: int | None = None
    edited: bool = False
    environment: str = ""
    key: str = ""

    @property
    def kind_label(self) -> str:
        return FILTER_KINDS.get(self.kind, self.kind)

    def as_dict(self) -> dict[str, Any]:
        return {
            "occurred_at": self.occurred_at.isoformat(),
            "kind": self.kind,
            "source": self.source,
            "text": self.text,
            "subject": self.subject,
            "author": self.author,
            "entry_id": self.entry_id,
            "edited": self.edited,
        }


def window_of(incident: Incident) -> tuple[datetime, datetime | None]:
    return incident.started_at - LOOKBACK, incident.closed_at


def _entry_item(entry: TimelineEntry) -> Item:
    subject = None
    if entry.subject_type:
        subject = {"type": entry.subject_type, "id": entry.subject_id, "url": entry.subject_url}
    return Item(
        occurred_at=entry.occurred_at,
        kind=entry.kind,
        source=entry.source,
        text=entry.text,
        subject=subject,
        author=entry.author.username if entry.author_id else None,
        author_id=entry.author_id,
        entry_id=entry.pk,
        edited=entry.edited_at is not None,
        key=f"entry:{entry.pk}",
    )


def _system_item(entry: SystemEntry) -> Item:
    return Item(
        occurred_at=entry.occurred_at,
        kind=entry.kind,
        source="system",
        text=entry.text,
        subject=entry.subject.as_dict() if entry.subject else None,
        environment=entry.environment,
        key=entry.key,
    )


def merged(
    incident: Incident,
    *,
    environment_ids: list[int] | None = None,
    before: datetime | None = None,
    kinds: set[str] | None = None,
    limit: int | None = WINDOW,
) -> tuple[list[Item], bool]:
    """The newest ``limit`` entries (before ``before``), oldest first, and whether there are
    older ones. ``limit=None`` reads everything (the Markdown export)."""
    since, until = window_of(incident)
    if environment_ids is None:
        environment_ids = list(incident.environments.values_list("pk", flat=True))
    own = (
        TimelineEntry.objects.filter(incident=incident)
        .select_related("author")
        .only(
            "id",
            "kind",
            "source",
            "text",
            "occurred_at",
            "edited_at",
            "subject_type",
            "subject_id",
            "subject_url",
            "author_id",
            "author__username",
        )
    )
    if before is not None:
        own = own.filter(occurred_at__lt=before)
    own_kinds = None
    if kinds:
        own_kinds = kinds & (set(PERSON_KINDS) | set(INCIDENT_KINDS))
        own = own.filter(kind__in=own_kinds)
    take = (limit + 1) if limit else None
    rows = [] if kinds and not own_kinds else list(own.order_by("-occurred_at", "-id")[:take])
    items = [_entry_item(r) for r in rows]
    system_kinds = None if not kinds else kinds & set(incident_hooks.KINDS)
    if not kinds or system_kinds:
        items.extend(
            _system_item(e)
            for e in incident_hooks.timeline(
                incident.project_id,
                environment_ids,
                since,
                until,
                before=before,
                limit=take or 100_000,
                kinds=system_kinds,
            )
        )
    items.sort(key=lambda i: (i.occurred_at, i.key), reverse=True)
    more = bool(limit) and len(items) > limit
    if limit:
        items = items[:limit]
    items.reverse()
    return items, more


def as_markdown(incident: Incident, items: list[Item]) -> str:
    """The timeline as a Markdown list: time, kind, who, text and a link to the subject."""
    lines = [f"## Timeline of {incident.reference}: {incident.title}", ""]
    for item in items:
        who = f" ({item.author})" if item.author else ""
        text = " ".join(item.text.split())
        link = ""
        if item.subject and item.subject.get("url"):
            link = f" — [{item.subject['type']} {item.subject['id']}]({item.subject['url']})"
        lines.append(
            f"- **{item.occurred_at:%Y-%m-%d %H:%M:%S %Z}** · {item.kind_label}{who}: "
            f"{_escape(text)}{link}"
        )
    if not items:
        lines.append("_Nothing recorded._")
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    # People's text stays Markdown, but a line may not start a heading or break the list.
    return text.replace("\n", " ")


# --- This app's own source: health-check state changes ------------------------------------------


class CheckSource(incident_hooks.IncidentSource):
    VERBS = {"check.failing": "started failing", "check.recovered": "recovered"}

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
        if kinds is not None and "check" not in kinds:
            return []
        names = list(
            Project.objects.filter(pk=project_id)
            .values_list("environments__name", flat=True)
            .filter(environments__pk__in=environment_ids)
        )
        if not names:
            return []
        rows = AuditEvent.objects.filter(
            project_id=project_id,
            verb__in=list(self.VERBS),
            created_at__gte=since,
            data__environment__in=names,
        )
        if until is not None:
            rows = rows.filter(created_at__lte=until)
        if before is not None:
            rows = rows.filter(created_at__lt=before)
        slug = Project.objects.filter(pk=project_id).values_list("slug", flat=True).first()
        entries = []
        urls: dict[str, str] = {}
        for event in rows.order_by("-created_at")[:limit]:
            data = event.data or {}
            check_id = str(data.get("check_id") or event.object_id)
            label = "Smoke suite" if data.get("kind") == "suite" else "Check"
            summary = f": {data['summary']}" if data.get("summary") else ""
            if check_id not in urls:
                urls[check_id] = reverse("check-detail", args=[slug, check_id])
            url = urls[check_id]
            entries.append(
                SystemEntry(
                    occurred_at=event.created_at,
                    kind="check",
                    text=f"{label} “{data.get('name', check_id)}” in {data.get('environment')} "
                    f"{self.VERBS[event.verb]}{summary}",
                    subject=Subject("check", str(check_id), url),
                    environment=data.get("environment", ""),
                    key=f"event:{event.pk}",
                )
            )
        return entries


# --- Rendering ---------------------------------------------------------------------------------


def render_items(
    items: list[Item],
    *,
    edit_url_prefix: str = "",
    csrf_token: str = "",
    user_id: int | None = None,
) -> SafeString:
    """The timeline's list items, formatted here once: a window holds up to WINDOW entries,
    and through template tags and filters they were most of the page's time."""
    from django.utils import timezone as tz

    from monitoring.templatetags.incidents import render_markdown_cached

    parts = []
    for item in items:
        when = tz.localtime(item.occurred_at)
        if item.source == "person":
            body = format_html(
                '<strong>{}</strong>: <span class="text">{}</span>{}',
                item.author or "someone",
                mark_safe(render_markdown_cached(item.text)),  # noqa: S308 - markdown-it + nh3
                mark_safe(' <small class="muted">(edited)</small>') if item.edited else "",
            )
        else:
            body = format_html('<span class="text">{}</span>', item.text)
        subject = ""
        if item.subject and item.subject.get("url"):
            subject = format_html(
                ' <a href="{}" class="subject">{} {}</a>',
                item.subject["url"],
                item.subject["type"],
                item.subject["id"],
            )
        edit = ""
        if (
            edit_url_prefix
            and item.source == "person"
            and item.entry_id
            and item.author_id == user_id
        ):
            edit = format_html(
                '<details class="inline-details"><summary>edit</summary>'
                '<form method="post" action="{}{}/edit/">'
                '<input type="hidden" name="csrfmiddlewaretoken" value="{}">'
                '<textarea name="text" rows="2" required>{}</textarea>'
                '<button type="submit" class="small">Save</button></form></details>',
                edit_url_prefix,
                item.entry_id,
                csrf_token,
                item.text,
            )
        parts.append(
            format_html(
                '<li class="entry source-{} kind-{}" data-kind="{}"><time datetime="{}">{}</time> '
                '<span class="badge kind">{}</span> {}{}{}</li>',
                item.source,
                item.kind,
                item.kind,
                item.occurred_at.isoformat(),
                when.strftime("%m-%d %H:%M:%S"),
                item.kind_label,
                body,
                subject,
                edit,
            )
        )
    return mark_safe("".join(parts))  # noqa: S308 - every part built with format_html


def render_suspects(suspects: list, *, rollback_url: str = "", csrf_token: str = "") -> SafeString:
    """The suspect deployments' list items (up to 50 on a page), formatted here once."""
    from django.utils import timezone as tz

    from monitoring.templatetags.incidents import ago

    parts = []
    for s in suspects:
        changes = format_html_join(
            " ", "<code>{} {} → {}</code>", ((c.service, c.before, c.after) for c in s.changes)
        )
        action = ""
        if rollback_url and s.can_roll_back:
            action = format_html(
                '<form method="post" action="{}" class="inline" data-confirm="Roll back {}?">'
                '<input type="hidden" name="csrfmiddlewaretoken" value="{}">'
                '<input type="hidden" name="suspect" value="{}">'
                '<button type="submit" class="danger" data-action="rollback">Roll back</button>'
                "</form>",
                rollback_url,
                s.title,
                csrf_token,
                s.id,
            )
        elif s.rollback_blocked_reason:
            action = format_html(
                '<small class="muted">No rollback: {}.</small>', s.rollback_blocked_reason
            )
        parts.append(
            format_html(
                '<li class="suspect{}" data-suspect="{}"><div><a href="{}"><strong>{}</strong></a> '
                '<span class="badge">{}</span> <span class="muted">{} ({})</span></div>'
                "{}{}</li>",
                " rolled-back" if s.rolled_back else "",
                s.id,
                s.url,
                s.title,
                s.status,
                tz.localtime(s.at).strftime("%Y-%m-%d %H:%M"),
                ago(s.at),
                format_html('<div class="changes">{}</div>', changes) if s.changes else "",
                action,
            )
        )
    return mark_safe("".join(parts))  # noqa: S308 - every part built with format_html
