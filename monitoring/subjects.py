"""How monitoring's events read in a feed: each line names its check, target, incident or
postmortem and links to it (registered with releasecenter.subjects in MonitoringConfig)."""

from __future__ import annotations

from django.urls import reverse

from releasecenter.models import AuditEvent, Project
from releasecenter.subjects import Line
from releasecenter.validation import ascii_int

from .incidents.models import TimelineEntry
from .models import Check

CHECK_PHRASES = {
    "check.created": "added",
    "check.updated": "changed",
    "check.deleted": "deleted",
    "check.step_added": "got a new step",
    "check.failing": "started failing",
    "check.recovered": "recovered",
}


def describe_events(events: list[AuditEvent]) -> dict[int, Line | None]:
    slugs = dict(
        Project.objects.filter(pk__in={e.project_id for e in events if e.project_id}).values_list(
            "pk", "slug"
        )
    )
    check_ids = {ascii_int(e.object_id) for e in events if e.object_type == "monitoring.check"} - {
        None
    }
    checks = {
        c.pk: c
        for c in Check.objects.filter(pk__in=check_ids).select_related("environment", "parent")
    }
    entry_ids = {
        (e.data or {}).get("entry_id")
        for e in events
        if e.verb == "incident.entry_added" and (e.data or {}).get("entry_id")
    }
    entries = {t.pk: t for t in TimelineEntry.objects.filter(pk__in=entry_ids)}
    lines: dict[int, Line | None] = {}
    for event in events:
        data, after, before = event.data or {}, event.after or {}, event.before or {}
        slug = slugs.get(event.project_id)
        prefix = event.verb.partition(".")[0]
        if prefix == "check":
            if not event.topic.startswith("project:") and event.verb != "check.ran":
                lines[event.pk] = None  # the check page's own copy
                continue
            check = checks.get(ascii_int(event.object_id) or 0)
            name = data.get("name") or after.get("name") or before.get("name") or "?"
            env = data.get("environment") or after.get("environment") or ""
            if check is not None:
                name, env = check.name, check.environment.name
            label = (
                "Smoke suite"
                if (check and check.is_suite) or data.get("kind") == "suite"
                else "Check"
            )
            if check is not None and check.is_step:
                label, name = "Step", f"{check.parent.name} › {check.name}"
            where = f" in {env}" if env else ""
            if event.verb == "check.ran":
                phrase = "ran and passed" if data.get("passed") else "ran and failed"
            else:
                phrase = CHECK_PHRASES.get(
                    event.verb, event.verb.partition(".")[2].replace("_", " ")
                )
            summary = (
                f": {data['summary']}"
                if data.get("summary") and event.verb != "check.recovered"
                else ""
            )
            url = ""
            if check is not None and slug:
                target = check.parent_id or check.pk
                url = reverse("check-detail", args=[slug, target])
            lines[event.pk] = Line(f"{label} “{name}”{where} {phrase}{summary}", url)
        elif prefix == "target":
            metric = str(data.get("metric", "")).replace("_", " ")
            env = data.get("environment", "")
            state = "breached" if event.verb == "target.breached" else "back within its threshold"
            url = reverse("environment-monitoring", args=[slug, env]) if slug and env else ""
            lines[event.pk] = Line(f"{metric.capitalize()} target in {env} {state}", url)
        elif prefix == "incident":
            url = data.get("url", "")
            head = f"{data.get('reference', 'Incident')} {data.get('title', '')}".strip()
            entry = entries.get(data.get("entry_id"))
            if event.verb == "incident.entry_added" and entry is not None:
                text = " ".join(entry.text.split())
                text = text if len(text) <= 140 else text[:139] + "…"
                lines[event.pk] = Line(f"{head}: {entry.get_kind_display().lower()} — {text}", url)
            elif data.get("text"):
                lines[event.pk] = Line(str(data["text"]), url)
            else:
                what = event.verb.partition(".")[2].replace("_", " ")
                lines[event.pk] = Line(f"{head}: {what}", url)
        elif prefix == "postmortem":
            what = {
                "postmortem.updated": "edited",
                "postmortem.reviewed": "marked reviewed",
                "postmortem.action_added": f"action item added: {after.get('text', '')}",
                "postmortem.action_done": f"action item done: {after.get('text', '')}",
                "postmortem.action_reopened": f"action item reopened: {after.get('text', '')}",
            }.get(event.verb, event.verb.partition(".")[2].replace("_", " "))
            lines[event.pk] = Line(f"{data.get('text', 'Postmortem')} {what}", data.get("url", ""))
    return lines
