"""Read-only queries other apps build on (the release gates, the compliance bundle) and the
pages use. Each reads in a fixed number of queries, whatever the number of items.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any

from django.db.models import Count, F, Q
from django.utils import timezone

from .models import ChecklistTemplate, Evidence, Run, RunItem, Section, Severity


@dataclass(frozen=True)
class GateItem:
    """An item of a run whose severity makes it a gate of a release.

    ``key`` is the RunItem pk as a string: unique and stable for the life of the run, so a
    release can record an acceptance or acknowledgement against it."""

    key: str
    run_id: int
    text: str
    severity: str  # "warning" | "conditional" | "no-go"
    state: str  # "open" | "done" | "na"
    section_title: str
    # The summary of the item's last automated check when it failed, else "".
    automation_failure: str = ""


def gate_items(run_ids: list[int]) -> list[GateItem]:
    """Every item with a severity other than "none" in these runs, sub-items included, in
    document order per run. One query."""
    if not run_ids:
        return []
    rows = (
        RunItem.objects.filter(run_id__in=run_ids)
        .exclude(item__severity=Severity.NONE)
        .order_by("run_id", "item__position")
        .values_list(
            "pk",
            "run_id",
            "item__text",
            "item__severity",
            "state",
            "item__section__title",
            "automation_passed",
            "automation_summary",
        )
    )
    return [
        GateItem(
            str(pk),
            run_id,
            text,
            severity,
            state,
            section_title or "",
            summary if passed is False else "",
        )
        for pk, run_id, text, severity, state, section_title, passed, summary in rows
    ]


def run_progress(run_ids: list[int]) -> dict[int, tuple[int, int]]:
    """{run_id: (items done or N/A, all items)} for these runs, in one query."""
    progress = {run_id: (0, 0) for run_id in run_ids}
    if not run_ids:
        return progress
    rows = (
        RunItem.objects.filter(run_id__in=run_ids)
        .order_by()
        .values("run_id")
        .annotate(finished=Count("pk", filter=~Q(state=RunItem.State.OPEN)), total=Count("pk"))
    )
    for row in rows:
        progress[row["run_id"]] = (row["finished"], row["total"])
    return progress


def due_at(run: Run, offset_minutes: int | None) -> datetime | None:
    if run.planned_start is None or offset_minutes is None:
        return None
    return run.planned_start + timedelta(minutes=offset_minutes)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _evidence_record(evidence: Evidence) -> dict[str, Any]:
    return {
        "id": evidence.pk,
        "kind": evidence.kind,
        "name": evidence.name,
        "content_type": evidence.content_type,
        "size": evidence.size,
        "storage_name": evidence.file.name if evidence.kind == Evidence.Kind.FILE else "",
        "url": evidence.url,
        "uploaded_by": evidence.uploaded_by.username if evidence.uploaded_by_id else None,
        "uploaded_at": _iso(evidence.uploaded_at),
    }


def run_report(run: Run) -> dict[str, Any]:
    """Everything a compliance bundle needs about a run, as JSON-ready data: every item with
    text, severity, state, who ticked it and when, N/A reason, note, and its evidence (name,
    content type, size, storage name, uploaded by/at, or the link). Four queries."""
    run = Run.objects.select_related(
        "template", "template_version", "environment", "created_by", "project"
    ).get(pk=run.pk)
    sections = {
        s.pk: s for s in Section.objects.filter(version_id=run.template_version_id).only("title")
    }
    evidence: dict[int, list[dict[str, Any]]] = {}
    for record in Evidence.objects.filter(run=run).select_related("uploaded_by"):
        evidence.setdefault(record.run_item_id, []).append(_evidence_record(record))
    items = []
    rows = (
        RunItem.objects.filter(run=run)
        .select_related("item", "done_by", "changed_by")
        .order_by("item__position")
    )
    for row in rows:
        item = row.item
        items.append(
            {
                "key": row.key,
                "section": sections[item.section_id].title if item.section_id in sections else "",
                "depth": item.depth,
                "text": item.text,
                "severity": item.severity,
                "owner_role": item.owner_role,
                "evidence_required": item.evidence_required,
                "due_at": _iso(due_at(run, item.due_offset_minutes)),
                "state": row.state,
                "done_by": row.done_by.username if row.done_by_id else None,
                "done_at": _iso(row.done_at),
                "na_reason": row.na_reason,
                "note": row.note,
                "last_changed_by": row.changed_by.username if row.changed_by_id else None,
                "last_changed_at": _iso(row.changed_at),
                "version": row.version,
                "automation": item.automation,
                "automation_passed": row.automation_passed,
                "automation_summary": row.automation_summary,
                "evidence": evidence.get(row.pk, []),
            }
        )
    finished = sum(1 for i in items if i["state"] != RunItem.State.OPEN)
    return {
        "run": {
            "id": run.pk,
            "title": run.title,
            "project": run.project.slug,
            "template": run.template.name,
            "template_id": run.template_id,
            "template_version": run.template_version.number,
            "environment": run.environment.name if run.environment_id else None,
            "planned_start": _iso(run.planned_start),
            "status": run.status,
            "created_by": run.created_by.username if run.created_by_id else None,
            "created_at": _iso(run.created_at),
            "completed_at": _iso(run.completed_at),
            "deadline": _iso(run.deadline),
            "missed": run.is_missed,
        },
        "signoff_roles": list(run.template_version.signoff_roles or []),
        "progress": {"finished": finished, "total": len(items)},
        "items": items,
    }


def evidence_files(run: Run) -> Iterator[tuple[str, IO[bytes]]]:
    """(archive name, open binary file) for every stored file and check response of the run,
    for copying into a zip. Files are opened one at a time as the caller iterates; the caller
    closes each. Archive names are unique: ``evidence/<item key>/<evidence id>-<name>``."""
    records = (
        Evidence.objects.filter(run=run)
        .exclude(kind=Evidence.Kind.LINK)
        .order_by("run_item_id", "id")
    )
    for record in records:
        name = record.name.replace("/", "_").replace("\\", "_")
        if record.kind == Evidence.Kind.TEXT:
            if not name.endswith(".txt"):
                name += ".txt"
            archive_name = f"evidence/{record.run_item_id}/{record.pk}-{name}"
            yield archive_name, io.BytesIO(record.text.encode("utf-8"))
        else:
            archive_name = f"evidence/{record.run_item_id}/{record.pk}-{name}"
            yield archive_name, record.file.storage.open(record.file.name, "rb")


def missed_runs(project_id: int, now: datetime | None = None, days: int = 7):  # noqa: ANN201
    """Recurring runs whose deadline passed in the last ``days`` days without completion
    (still open, or completed late), newest first."""
    now = now or timezone.now()
    return (
        Run.objects.filter(
            project_id=project_id,
            deadline__isnull=False,
            deadline__lt=now,
            deadline__gte=now - timedelta(days=days),
        )
        .filter(Q(completed_at__isnull=True) | Q(completed_at__gt=F("deadline")))
        .select_related("environment")
        .order_by("-deadline")
    )


def template_named(project: Any, name: str) -> ChecklistTemplate | None:
    """The project's template in use under ``name`` (what an import's name conflicts with)."""
    return (
        ChecklistTemplate.objects.filter(
            project=project, name=" ".join(name.split()), archived_at__isnull=True
        )
        .select_related("current_version")
        .first()
    )
