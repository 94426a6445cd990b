"""The verbs that change checklists. Views, the API, commands, tasks and other apps call these.

Each verb validates first (a ValidationError with a message a person can act on), then changes
rows inside a transaction, then publishes an event (releasecenter.events), so nothing is
half-written on bad input and every change is in the audit log and on the live stream.

Access is the caller's job: pages and the API resolve the project or object through
releasecenter.access (outsiders get 404, too-low roles 403) before they call in here; these
functions trust the actor they are given and record it. ``actor`` may be None for the system
(beat, automation).

Concurrency of run items: every change of a RunItem locks its row and compares the version the
writer saw (``expected_version``) with the stored one. A stale version is refused with
``Conflict`` naming who changed the item, so two people changing one item never silently
overwrite each other, while changes to different items never wait on each other.

Events (releasecenter.events, so the audit log and the live stream): everything about a run is
published on ``f"run:{run.pk}"``. Every change of a run item (verbs ``run.item.ticked``,
``.unticked``, ``.na``, ``.noted``, ``.evidence_added``, ``.evidence_removed``,
``.automation_failed``) carries ``data = {"item": <RunItem pk as str>, "state": "open"|"done"|"na",
"by": <username or None>, "version": <the item's new version>, "change": <what changed>}`` and
``before``/``after`` snapshots of state, version, N/A reason and note. ``run.created``,
``run.completed`` and ``run.reopened`` carry ``{"run": id, ...}``. Template changes and missed
recurring runs are published on the project's topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from releasecenter import automation, events
from releasecenter.models import Environment, Project
from releasecenter.services import Conflict
from releasecenter.validation import ascii_int

from . import drafts
from .lib.markdown_import import (
    RunbookImportError,
    decode_upload,
    due_offset_in_text,
    parse_runbook,
)
from .models import (
    ChecklistTemplate,
    Evidence,
    Item,
    RecurringSchedule,
    Run,
    RunItem,
    Severity,
    TemplateVersion,
)

__all__ = [
    "Conflict",
    "ImportOutcome",
    "add_evidence_file",
    "add_evidence_link",
    "add_item",
    "add_section",
    "archive_template",
    "create_due_recurring_runs",
    "create_run",
    "create_schedule",
    "create_template",
    "delete_item",
    "delete_schedule",
    "decode_source",
    "delete_section",
    "flag_missed_runs",
    "guess_kind",
    "import_new_version",
    "import_runbook",
    "import_summary",
    "plural",
    "preview_import",
    "mark_na",
    "move_item",
    "move_section",
    "parse_due_offset",
    "preview_runbook",
    "queue_due_automations",
    "remove_evidence",
    "reopen_for_new_build",
    "run_automated_item",
    "set_note",
    "set_schedule_active",
    "set_signoff_roles",
    "tick",
    "untick",
    "update_item",
    "update_section",
    "update_template",
]

MAX_NAME = 200
MAX_TITLE = 300
MAX_ITEM_TEXT = 5000
MAX_DETAILS = 50_000
MAX_NOTE = 2000
MAX_NA_REASON = 500
MAX_DUE_MINUTES = 60 * 24 * 60  # sixty days either side of the planned start
MAX_EVIDENCE_BYTES = 25 * 1024 * 1024

# Evidence files: the extension decides the stored content type, and binary formats must start
# with their magic bytes, so an HTML page renamed to .png is refused rather than served.
EVIDENCE_TYPES: dict[str, tuple[str, tuple[bytes, ...]]] = {
    ".png": ("image/png", (b"\x89PNG\r\n\x1a\n",)),
    ".jpg": ("image/jpeg", (b"\xff\xd8\xff",)),
    ".jpeg": ("image/jpeg", (b"\xff\xd8\xff",)),
    ".gif": ("image/gif", (b"GIF87a", b"GIF89a")),
    ".webp": ("image/webp", (b"RIFF",)),
    ".pdf": ("application/pdf", (b"%PDF-",)),
    ".zip": ("application/zip", (b"PK\x03\x04", b"PK\x05\x06")),
    ".gz": ("application/gzip", (b"\x1f\x8b",)),
    ".txt": ("text/plain", ()),
    ".log": ("text/plain", ()),
    ".md": ("text/markdown", ()),
    ".csv": ("text/csv", ()),
    ".json": ("application/json", ()),
    ".har": ("application/json", ()),
    ".yaml": ("application/yaml", ()),
    ".yml": ("application/yaml", ()),
}


def _user(actor: Any) -> Any:
    return actor if getattr(actor, "is_authenticated", False) else None


def _username(actor: Any) -> str | None:
    user = _user(actor)
    return user.username if user is not None else None


def _one_line(value: Any, limit: int, label: str, *, required: bool = True) -> str:
    text = " ".join(str(value or "").split())
    if required and not text:
        raise ValidationError({label: f"The {label.replace('_', ' ')} cannot be empty."})
    if len(text) > limit:
        raise ValidationError({label: f"Use at most {limit} characters."})
    return text


# --- Markdown import -----------------------------------------------------------------------


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``"1 command"``, ``"2 commands"``: counts as import summaries print them."""
    return f"{count} {singular if count == 1 else (plural_form or singular + 's')}"


def counts_sentence(counts: dict[str, Any]) -> str:
    """ "3 sections, 1 item, 2 commands" for an import's counts."""
    return ", ".join(
        plural(counts[key], word)
        for key, word in (("sections", "section"), ("items", "item"), ("commands", "command"))
    )


@dataclass
class ImportPreview:
    draft: drafts.Draft
    warnings: list[str]
    # The severity markers that made gates, each with its line (GateMarker), for a person to
    # check before saving; their line numbers can be passed back as ``not_gates``.
    gates: list[Any]


@dataclass
class ImportOutcome:
    template: ChecklistTemplate
    # Exactly the JSON the command (--json) and the API answer with.
    summary: dict[str, Any]
    warnings: list[str]


_KIND_HINTS = [
    (re.compile(r"rollback|roll[\s-]back", re.I), ChecklistTemplate.Kind.ROLLBACK),
    (re.compile(r"post[\s-]?deploy", re.I), ChecklistTemplate.Kind.POST_DEPLOYMENT),
    (re.compile(r"pre[\s-]?deploy|smoke|staging", re.I), ChecklistTemplate.Kind.PRE_DEPLOYMENT),
    (re.compile(r"deploy", re.I), ChecklistTemplate.Kind.DEPLOYMENT_DAY),
]


def guess_kind(title: str) -> str:
    """A template kind from words in its name ("rollback", "post-deploy", "smoke", …)."""
    for pattern, kind in _KIND_HINTS:
        if pattern.search(title):
            return kind
    return ChecklistTemplate.Kind.OTHER


def decode_source(source: str | bytes) -> str:
    """Text of an upload (UTF-8, else Windows-1252; refused when binary or over 1 MiB)."""
    try:
        return decode_upload(source) if isinstance(source, bytes | bytearray) else source
    except RunbookImportError as exc:
        raise ValidationError({"markdown": str(exc)}) from exc


def preview_import(
    source: str | bytes, *, filename: str | None = None, not_gates: Any = ()
) -> ImportPreview:
    """Parse without saving: the tree, the parser's warnings and the gate report.

    ``not_gates``: line numbers whose severity markers a person said are no gates. Raises
    ValidationError (on ``markdown``) for text that cannot be a runbook: empty, nothing
    importable, over 1 MiB, binary."""
    text = decode_source(source)
    try:
        parsed = parse_runbook(text, name=filename, not_gates=_line_numbers(not_gates))
    except RunbookImportError as exc:
        raise ValidationError({"markdown": str(exc)}) from exc
    return ImportPreview(drafts.from_parsed(parsed), list(parsed.warnings), list(parsed.gates))


def preview_runbook(
    source: str | bytes, *, filename: str | None = None
) -> tuple[drafts.Draft, list[str]]:
    """Parse without saving: the tree and the parser's warnings, for a preview."""
    preview = preview_import(source, filename=filename)
    return preview.draft, preview.warnings


def _line_numbers(values: Any) -> frozenset[int]:
    lines = set()
    for value in values or ():
        text = str(value).strip()
        number = ascii_int(text) if len(text) <= 9 else None
        if number is None:
            raise ValidationError({"not_gates": f"“{text[:20]}” is not a line number."})
        lines.add(number)
    return frozenset(lines)


def import_runbook(
    actor: Any,
    project: Project,
    source: str | bytes,
    *,
    name: str | None = None,
    kind: str | None = None,
    filename: str | None = None,
    not_gates: Any = (),
) -> ImportOutcome:
    """Turn a Markdown runbook into a new template (version 1), the one importer behind the
    command, the upload page and the API. ``source`` is text, or the bytes of an uploaded file
    (decoded as UTF-8 or Windows-1252). The name defaults to the runbook's title. A name that
    is taken is a Conflict (``import_new_version`` adds a version to that template instead)."""
    preview = preview_import(source, filename=filename, not_gates=not_gates)
    draft, warnings = preview.draft, preview.warnings
    name = _one_line(name or draft.title or filename or "Imported runbook", MAX_NAME, "name")
    if kind is None or kind == "":
        kind = guess_kind(name)
    if kind not in ChecklistTemplate.Kind.values:
        raise ValidationError(
            {"kind": f"Choose one of: {', '.join(ChecklistTemplate.Kind.values)}."}
        )
    with transaction.atomic():
        template = _new_template(actor, project, name, kind)
        version = drafts.write_version(
            template,
            draft,
            number=1,
            source=TemplateVersion.Source.IMPORT,
            summary=f"Imported from {filename}" if filename else "Imported from Markdown",
            actor=actor,
        )
        template.current_version = version
        template.save(update_fields=["current_version"])
        counts = draft.counts()
        summary = {"template_id": template.pk, "name": template.name, **counts}
        events.publish(
            f"project:{project.pk}",
            "checklist_template.imported",
            project=project,
            actor=actor,
            obj=template,
            after={"name": name, "kind": kind, "version": 1, **counts},
            data={"template": template.pk, "name": name},
        )
    return ImportOutcome(template=template, summary=summary, warnings=warnings)


def import_new_version(
    actor: Any,
    template: ChecklistTemplate,
    source: str | bytes,
    *,
    filename: str | None = None,
    not_gates: Any = (),
) -> ImportOutcome:
    """Import an updated runbook as the next version of an existing template (what a person
    re-importing a runbook under its name wants): runs already started keep their version."""
    preview = preview_import(source, filename=filename, not_gates=not_gates)
    draft = preview.draft
    with transaction.atomic():
        template = (
            ChecklistTemplate.objects.select_for_update(of=("self",))
            .select_related("current_version")
            .get(pk=template.pk)
        )
        _refuse_archived(template)
        previous = template.current_version
        number = (previous.number if previous is not None else 0) + 1
        version = drafts.write_version(
            template,
            draft,
            number=number,
            source=TemplateVersion.Source.IMPORT,
            summary=f"Imported from {filename}" if filename else "Imported from Markdown",
            actor=actor,
        )
        template.current_version = version
        template.updated_at = timezone.now()
        template.save(update_fields=["current_version", "updated_at"])
        counts = draft.counts()
        events.publish(
            f"project:{template.project_id}",
            "checklist_template.imported",
            project=template.project_id,
            actor=actor,
            obj=template,
            before={"version": previous.number if previous is not None else None},
            after={"name": template.name, "kind": template.kind, "version": number, **counts},
            data={"template": template.pk, "name": template.name, "version": number},
        )
    summary = {"template_id": template.pk, "name": template.name, **counts}
    return ImportOutcome(template=template, summary=summary, warnings=preview.warnings)


def import_summary(template: ChecklistTemplate, version: TemplateVersion | None = None) -> dict:
    """The import JSON for a stored version (the current one by default), counted from rows."""
    version = version or template.current_version
    return {"template_id": template.pk, "name": template.name, **drafts.load(version).counts()}


def _new_template(actor: Any, project: Project, name: str, kind: str) -> ChecklistTemplate:
    template = ChecklistTemplate(project=project, name=name, kind=kind, created_by=_user(actor))
    try:
        with transaction.atomic():
            template.save()
    except IntegrityError as exc:
        raise Conflict(
            f"A checklist template named '{name}' exists in this project; choose another name."
        ) from exc
    return template


# --- Templates -----------------------------------------------------------------------------


def create_template(actor: Any, project: Project, *, name: str, kind: str) -> ChecklistTemplate:
    """An empty template (version 1 with no sections), to be filled in the editor."""
    name = _one_line(name, MAX_NAME, "name")
    if kind not in ChecklistTemplate.Kind.values:
        raise ValidationError({"kind": "Choose a kind of checklist."})
    with transaction.atomic():
        template = _new_template(actor, project, name, kind)
        version = drafts.write_version(
            template,
            drafts.Draft(title=name),
            number=1,
            source=TemplateVersion.Source.CREATE,
            summary="Created",
            actor=actor,
        )
        template.current_version = version
        template.save(update_fields=["current_version"])
        events.publish(
            f"project:{project.pk}",
            "checklist_template.created",
            project=project,
            actor=actor,
            obj=template,
            after={"name": name, "kind": kind},
            data={"template": template.pk, "name": name},
        )
    return template


@transaction.atomic
def update_template(
    actor: Any, template: ChecklistTemplate, *, name: str | None = None, kind: str | None = None
) -> ChecklistTemplate:
    """Rename or re-kind a template; this is not a change of its steps, so no new version."""
    template = ChecklistTemplate.objects.select_for_update().get(pk=template.pk)
    _refuse_archived(template)
    before = {"name": template.name, "kind": template.kind}
    if name is not None:
        template.name = _one_line(name, MAX_NAME, "name")
    if kind is not None:
        if kind not in ChecklistTemplate.Kind.values:
            raise ValidationError({"kind": "Choose a kind of checklist."})
        template.kind = kind
    template.updated_at = timezone.now()
    try:
        with transaction.atomic():
            template.save(update_fields=["name", "kind", "updated_at"])
    except IntegrityError as exc:
        raise Conflict(f"A checklist template named '{template.name}' exists already.") from exc
    events.publish(
        f"project:{template.project_id}",
        "checklist_template.updated",
        project=template.project_id,
        actor=actor,
        obj=template,
        before=before,
        after={"name": template.name, "kind": template.kind},
        data={"template": template.pk},
    )
    return template


@transaction.atomic
def archive_template(actor: Any, template: ChecklistTemplate) -> ChecklistTemplate:
    """Remove a template from use. Its runs keep their versions; its schedules stop."""
    template = ChecklistTemplate.objects.select_for_update().get(pk=template.pk)
    _refuse_archived(template)
    template.archived_at = timezone.now()
    template.save(update_fields=["archived_at"])
    template.schedules.filter(active=True).update(active=False)
    events.publish(
        f"project:{template.project_id}",
        "checklist_template.archived",
        project=template.project_id,
        actor=actor,
        obj=template,
        before={"archived": False},
        after={"archived": True, "name": template.name},
        data={"template": template.pk},
    )
    return template


def _refuse_archived(template: ChecklistTemplate) -> None:
    if template.archived_at is not None:
        raise ValidationError("This template was deleted; it cannot change or start runs.")


def _edit(
    actor: Any,
    template: ChecklistTemplate,
    expected_version: int | None,
    summary: str,
    change: Any,
) -> TemplateVersion:
    """Apply ``change(draft)`` to the current version and save the result as the next one.

    ``expected_version`` is the version number the editor was looking at; if someone saved a
    newer one meanwhile, the edit is refused instead of being applied to steps the person did
    not see."""
    with transaction.atomic():
        template = (
            ChecklistTemplate.objects.select_for_update(of=("self",))
            .select_related("current_version")
            .get(pk=template.pk)
        )
        _refuse_archived(template)
        current = template.current_version
        if expected_version is not None and current.number != expected_version:
            raise Conflict(
                f"Version {current.number} of this template was saved since you opened version "
                f"{expected_version}; look at the current version and make your change again."
            )
        draft = drafts.load(current)
        change(draft)
        version = drafts.write_version(
            template,
            draft,
            number=current.number + 1,
            source=TemplateVersion.Source.EDIT,
            summary=summary,
            actor=actor,
        )
        template.current_version = version
        template.updated_at = timezone.now()
        template.save(update_fields=["current_version", "updated_at"])
        events.publish(
            f"project:{template.project_id}",
            "checklist_template.edited",
            project=template.project_id,
            actor=actor,
            obj=template,
            before={"version": current.number},
            after={"version": version.number, "summary": summary},
            data={"template": template.pk, "version": version.number},
        )
    return version


def parse_due_offset(value: Any) -> int | None:
    """Minutes from a due offset as people write it: "-2h", "+15m", "0", "T-30 minutes",
    "-90" (minutes). Empty means no due time."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        minutes = value
    else:
        text = str(value).strip().replace("−", "-").replace("–", "-")
        if not text:
            return None
        if re.fullmatch(r"[+-]?\d+", text):
            minutes = int(text)
        else:
            phase = text if text[:1] in "Tt" else f"T{text if text[:1] in '+-' else '+' + text}"
            minutes = due_offset_in_text("T" + phase[1:])
            if minutes is None:
                raise ValidationError(
                    {"due_offset": "Write a due offset like -2h, +15m, 0 or T-30 minutes."}
                )
    if abs(minutes) > MAX_DUE_MINUTES:
        raise ValidationError({"due_offset": "A due offset is at most 60 days either way."})
    return minutes


def _clean_commands(value: Any) -> list[dict[str, str]]:
    if value in (None, ""):
        return []
    if not isinstance(value, list) or not all(
        isinstance(c, dict) and isinstance(c.get("code", ""), str) for c in value
    ):
        raise ValidationError({"commands": "Give commands as a list of {language, code}."})
    return [{"language": str(c.get("language") or ""), "code": c.get("code", "")} for c in value]


def _clean_automation(value: Any) -> dict[str, Any] | None:
    if value in (None, "", {}):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise ValidationError({"automation": 'Automation is an object with a "kind".'})
    if automation.runner_for(value["kind"]) is None:
        known = ", ".join(automation.kinds()) or "none are installed"
        raise ValidationError({"automation": f"No automation of kind '{value['kind']}' ({known})."})
    return value


def _clean_item_fields(fields: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    if "text" in fields or not partial:
        cleaned["text"] = _one_line(fields.get("text"), MAX_ITEM_TEXT, "text")
    if "details" in fields:
        details = str(fields["details"] or "").replace("\r\n", "\n").strip("\n")
        if len(details) > MAX_DETAILS:
            raise ValidationError({"details": f"Use at most {MAX_DETAILS} characters."})
        cleaned["details"] = details
    if "severity" in fields:
        if fields["severity"] not in Severity.values:
            raise ValidationError({"severity": f"Choose one of: {', '.join(Severity.values)}."})
        cleaned["severity"] = fields["severity"]
    if "owner_role" in fields:
        role = _one_line(fields["owner_role"], 80, "owner_role", required=False)
        if "[" in role or "]" in role:
            # The export writes the role as "[owner: …]", which cannot hold brackets.
            raise ValidationError({"owner_role": "An owner role cannot contain [ or ]."})
        cleaned["owner_role"] = role
    if "due_offset_minutes" in fields:
        cleaned["due_offset_minutes"] = parse_due_offset(fields["due_offset_minutes"])
    for flag in ("evidence_required", "pre_checked"):
        if flag in fields:
            cleaned[flag] = bool(fields[flag])
    if "commands" in fields:
        cleaned["commands"] = _clean_commands(fields["commands"])
    if "automation" in fields:
        cleaned["automation"] = _clean_automation(fields["automation"])
    if "independent_of_build" in fields:
        value = fields["independent_of_build"]
        if value not in (None, True, False):
            raise ValidationError(
                {"independent_of_build": "Answer true, false, or null (by the item's severity)."}
            )
        cleaned["independent_of_build"] = value
    return cleaned


def _clean_section_fields(fields: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    if "title" in fields or not partial:
        cleaned["title"] = _one_line(fields.get("title"), 500, "title")
    if "notes" in fields:
        notes = str(fields["notes"] or "").replace("\r\n", "\n").strip("\n")
        if len(notes) > MAX_DETAILS:
            raise ValidationError({"notes": f"Use at most {MAX_DETAILS} characters."})
        cleaned["notes"] = notes
    if "commands" in fields:
        cleaned["commands"] = _clean_commands(fields["commands"])
    return cleaned


def _section_in(draft: drafts.Draft, pk: int) -> tuple[list, drafts.SectionNode]:
    found = draft.find_section(int(pk))
    if found is None:
        raise ValidationError("That section is not part of the current version.")
    return found


def _item_in(draft: drafts.Draft, pk: int) -> tuple[list, drafts.ItemNode]:
    found = draft.find_item(int(pk))
    if found is None:
        raise ValidationError("That item is not part of the current version.")
    return found


def add_section(
    actor: Any,
    template: ChecklistTemplate,
    *,
    title: str,
    notes: str = "",
    parent_id: int | None = None,
    expected_version: int | None = None,
) -> TemplateVersion:
    """Append a section at the top level, or under ``parent_id`` (a Section pk)."""
    fields = _clean_section_fields({"title": title, "notes": notes}, partial=False)

    def change(draft: drafts.Draft) -> None:
        if parent_id is None:
            draft.sections.append(drafts.SectionNode(level=2, **fields))
        else:
            _siblings, parent = _section_in(draft, parent_id)
            parent.children.append(drafts.SectionNode(level=min(parent.level + 1, 6), **fields))

    return _edit(actor, template, expected_version, f"Added section “{fields['title']}”", change)


def update_section(
    actor: Any,
    template: ChecklistTemplate,
    section_id: int,
    *,
    expected_version: int | None = None,
    **fields: Any,
) -> TemplateVersion:
    cleaned = _clean_section_fields(fields, partial=True)

    def change(draft: drafts.Draft) -> None:
        _siblings, node = _section_in(draft, section_id)
        for key, value in cleaned.items():
            setattr(node, key, value)

    title = cleaned.get("title", "")
    return _edit(actor, template, expected_version, f"Edited section {title}".strip(), change)


def delete_section(
    actor: Any, template: ChecklistTemplate, section_id: int, *, expected_version: int | None = None
) -> TemplateVersion:
    """Remove a section with its items and subsections (from the new version only)."""

    def change(draft: drafts.Draft) -> None:
        siblings, node = _section_in(draft, section_id)
        siblings.remove(node)

    return _edit(actor, template, expected_version, "Deleted a section", change)


def move_section(
    actor: Any,
    template: ChecklistTemplate,
    section_id: int,
    direction: str,
    *,
    expected_version: int | None = None,
) -> TemplateVersion:
    """Move a section one place up or down among its siblings."""
    step = _direction(direction)

    def change(draft: drafts.Draft) -> None:
        siblings, node = _section_in(draft, section_id)
        _swap(siblings, node, step)

    return _edit(actor, template, expected_version, f"Moved a section {direction}", change)


def add_item(
    actor: Any,
    template: ChecklistTemplate,
    *,
    section_id: int,
    parent_item_id: int | None = None,
    expected_version: int | None = None,
    **fields: Any,
) -> TemplateVersion:
    """Append an item to a section, or a sub-item under ``parent_item_id``."""
    cleaned = _clean_item_fields(fields, partial=False)

    def change(draft: drafts.Draft) -> None:
        if parent_item_id is not None:
            _siblings, parent = _item_in(draft, parent_item_id)
            cleaned.setdefault("severity", parent.severity)
            parent.children.append(drafts.ItemNode(**cleaned))
        else:
            _siblings, section = _section_in(draft, section_id)
            cleaned.setdefault("severity", section.severity)
            section.items.append(drafts.ItemNode(**cleaned))

    return _edit(actor, template, expected_version, f"Added item “{cleaned['text'][:80]}”", change)


def update_item(
    actor: Any,
    template: ChecklistTemplate,
    item_id: int,
    *,
    expected_version: int | None = None,
    **fields: Any,
) -> TemplateVersion:
    cleaned = _clean_item_fields(fields, partial=True)

    def change(draft: drafts.Draft) -> None:
        _siblings, node = _item_in(draft, item_id)
        for key, value in cleaned.items():
            setattr(node, key, value)

    text = cleaned.get("text", "")
    return _edit(actor, template, expected_version, f"Edited item {text[:80]}".strip(), change)


def delete_item(
    actor: Any, template: ChecklistTemplate, item_id: int, *, expected_version: int | None = None
) -> TemplateVersion:
    """Remove an item with its sub-items (from the new version only)."""

    def change(draft: drafts.Draft) -> None:
        siblings, node = _item_in(draft, item_id)
        siblings.remove(node)

    return _edit(actor, template, expected_version, "Deleted an item", change)


def move_item(
    actor: Any,
    template: ChecklistTemplate,
    item_id: int,
    direction: str,
    *,
    expected_version: int | None = None,
) -> TemplateVersion:
    step = _direction(direction)

    def change(draft: drafts.Draft) -> None:
        siblings, node = _item_in(draft, item_id)
        _swap(siblings, node, step)

    return _edit(actor, template, expected_version, f"Moved an item {direction}", change)


def set_signoff_roles(
    actor: Any,
    template: ChecklistTemplate,
    roles: list[str],
    *,
    expected_version: int | None = None,
) -> TemplateVersion:
    cleaned: list[str] = []
    for role in roles:
        role = _one_line(role, 80, "signoff_roles", required=False)
        if role and role.casefold() not in {r.casefold() for r in cleaned}:
            cleaned.append(role)

    def change(draft: drafts.Draft) -> None:
        draft.signoff_roles = cleaned

    return _edit(actor, template, expected_version, "Changed the sign-off roles", change)


def _direction(direction: str) -> int:
    if direction not in ("up", "down"):
        raise ValidationError("Move up or down.")
    return -1 if direction == "up" else 1


def _swap(siblings: list, node: Any, step: int) -> None:
    index = siblings.index(node)
    target = index + step
    if not 0 <= target < len(siblings):
        raise ValidationError("It is already at the " + ("top." if step < 0 else "bottom."))
    siblings[index], siblings[target] = siblings[target], siblings[index]


# --- Runs ----------------------------------------------------------------------------------


def create_run(
    actor: Any,
    template: ChecklistTemplate,
    *,
    environment: Environment | None = None,
    planned_start: datetime | None = None,
    title: str | None = None,
) -> Run:
    """Open a run of the template's current version: one RunItem per item, sub-items included,
    items marked pre-checked in the template starting as done, except those that also require
    evidence: a new run has no evidence yet, so they start open like any step that needs proof.
    Audited, and published on ``f"run:{run.pk}"``. Safe inside the caller's transaction (a
    release opening its runs)."""
    return _open_run(
        actor, template, environment=environment, planned_start=planned_start, title=title
    )


def _open_run(
    actor: Any,
    template: ChecklistTemplate,
    *,
    environment: Environment | None,
    planned_start: datetime | None,
    title: str | None,
    schedule: RecurringSchedule | None = None,
    deadline: datetime | None = None,
) -> Run:
    template = ChecklistTemplate.objects.select_related("current_version").get(pk=template.pk)
    _refuse_archived(template)
    if environment is not None and environment.project_id != template.project_id:
        raise ValidationError({"environment": "That environment belongs to another project."})
    if planned_start is not None and timezone.is_naive(planned_start):
        raise ValidationError({"planned_start": "Give the planned start with its time zone."})
    default_title = template.name + (f" — {environment.name}" if environment else "")
    title = _one_line(title or default_title, MAX_TITLE, "title")
    now = timezone.now()
    with transaction.atomic():
        run = Run.objects.create(
            project_id=template.project_id,
            template=template,
            template_version=template.current_version,
            environment=environment,
            title=title,
            planned_start=planned_start,
            created_by=_user(actor),
            created_at=now,
            schedule=schedule,
            deadline=deadline,
        )
        rows = []
        for item_id, pre_checked, evidence_required in Item.objects.filter(
            version_id=template.current_version_id
        ).values_list("pk", "pre_checked", "evidence_required"):
            starts_done = pre_checked and not evidence_required
            rows.append(
                RunItem(
                    run=run,
                    item_id=item_id,
                    state=RunItem.State.DONE if starts_done else RunItem.State.OPEN,
                    done_at=now if starts_done else None,
                )
            )
        RunItem.objects.bulk_create(rows, batch_size=drafts.BATCH)
        _queue_automation_on_commit(
            RunItem.objects.filter(
                run=run, state=RunItem.State.OPEN, item__automation__isnull=False
            ),
            now,
        )
        if rows and all(r.state == RunItem.State.DONE for r in rows):
            run.status, run.completed_at = Run.Status.COMPLETED, now
            run.save(update_fields=["status", "completed_at"])
        events.publish(
            run.topic,
            "run.created",
            project=run.project_id,
            actor=actor,
            obj=run,
            after={
                "title": run.title,
                "template": template.pk,
                "version": template.current_version.number,
                "environment": environment.name if environment else None,
                "planned_start": planned_start.isoformat() if planned_start else None,
                "items": len(rows),
            },
            data={"run": run.pk, "title": run.title},
        )
    return run


def _share_lock_run(run_id: int) -> str | None:
    """Hold a shared lock on the run while changing one of its items; the run's status under
    that lock (None where there is no such lock: SQLite, whose writes are serial anyway).

    Item changes share the lock and so never wait on each other; the completion check takes it
    exclusively, so it counts open items only when no item change is in flight. Without this,
    the last two items ticked at once could each see the other still open and leave a finished
    run open for ever (or an untick could land beside a completion)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT status FROM checklists_run WHERE id = %s FOR SHARE", [run_id])
        row = cursor.fetchone()
    return row[0] if row else None


ITEM_STATE_FIELDS = [
    "state",
    "na_reason",
    "note",
    "done_by",
    "done_at",
    "version",
    "changed_by",
    "changed_at",
]
AUTOMATION_FIELDS = ["automation_passed", "automation_summary", "automation_at"]


def _locked_item(
    run_item_pk: int, *, note_evidence: bool = False, run: Run | None = None
) -> RunItem:
    """The item row, locked for update, with its (never changing) item and run.

    ``note_evidence`` also sets ``has_evidence``: whether the item had any evidence when it was
    locked, which saves reading the evidence when there is none (most ticks). A caller that
    already holds the item's ``run`` passes it, and the run is not read again."""
    # Only rows that never change are joined: when the lock had to wait, PostgreSQL re-reads
    # the locked row but keeps the joined rows of its first look, so a joined "changed_by"
    # could belong to the previous change.
    rows = RunItem.objects.select_for_update(of=("self",)).select_related(
        "item", *(() if run is not None else ("run",))
    )
    if note_evidence:
        rows = rows.annotate(
            has_evidence=Exists(Evidence.objects.filter(run_item_id=OuterRef("pk")))
        )
    row = rows.get(pk=run_item_pk)
    if run is not None:
        row.run = run
    return row


def _refuse_stale(current: RunItem, expected_version: int | None) -> None:
    if expected_version is None or int(expected_version) == current.version:
        return
    who = "Someone"
    if current.changed_by_id:
        changer = get_user_model().objects.filter(pk=current.changed_by_id).first()
        who = changer.username if changer else who
    when = timezone.localtime(current.changed_at).strftime("%H:%M:%S") if current.changed_at else ""
    raise Conflict(
        f"{who} changed this item{' at ' + when if when else ''} "
        f"(it is now {current.get_state_display()}); your change was not applied. "
        "Check its current state and try again."
    )


def _publish_item(
    actor: Any,
    run_item: RunItem,
    project_id: int,
    verb: str,
    change: str,
    before: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    after = {
        "state": run_item.state,
        "version": run_item.version,
        "na_reason": run_item.na_reason,
        "note": run_item.note,
    }
    events.publish(
        f"run:{run_item.run_id}",
        verb,
        project=project_id,
        actor=actor,
        obj=run_item,
        before=before,
        after=after,
        data={
            "item": run_item.key,
            "state": run_item.state,
            "by": _username(actor),
            "version": run_item.version,
            "change": change,
            # What a page needs to show the change without asking the server again.
            **({"na_reason": run_item.na_reason} if change == "na" else {}),
            **({"note": run_item.note} if change == "note" else {}),
            **(extra or {}),
        },
    )


def _snapshot(run_item: RunItem) -> dict[str, Any]:
    return {
        "state": run_item.state,
        "version": run_item.version,
        "na_reason": run_item.na_reason,
        "note": run_item.note,
    }


def _change_item(
    actor: Any,
    run_item: RunItem,
    expected_version: int | None,
    change: str,
    verb: str,
    apply: Any,
) -> RunItem:
    """Lock the row, refuse a stale version, let ``apply(row)`` change it (returning False for
    a change that changes nothing), bump the version and publish."""
    with transaction.atomic():
        run_status = _share_lock_run(run_item.run_id)
        # The run's fields used here (id, project) never change: the caller's copy will do.
        current = _locked_item(run_item.pk, note_evidence=True, run=run_item.run)
        _refuse_stale(current, expected_version)
        before = _snapshot(current)
        if apply(current) is False:
            return current
        now = timezone.now()
        current.version += 1
        current.changed_by = _user(actor)
        current.changed_at = now
        current.save(update_fields=ITEM_STATE_FIELDS)
        _publish_item(actor, current, current.run.project_id, verb, change, before)
        # A note never completes or reopens a run, and neither does opening an item of a run
        # that is open (under the shared lock no completion can be in flight; one that waits
        # for it counts again after this commit and finds this item open).
        reopening_open_run = current.state == RunItem.State.OPEN and run_status == Run.Status.OPEN
        if change != "note" and not reopening_open_run:
            run_id = current.run_id
            transaction.on_commit(lambda: sync_completion(run_id, actor))
    return current


def tick(actor: Any, run_item: RunItem, *, expected_version: int | None) -> RunItem:
    """Mark the item done by ``actor``. An item that requires evidence needs some first."""

    def apply(row: RunItem) -> bool:
        if row.state == RunItem.State.DONE:
            return False
        if row.item.evidence_required and not row.has_evidence:
            raise ValidationError(
                "This item needs evidence before it can be ticked: attach a file or a link."
            )
        row.state = RunItem.State.DONE
        row.done_by = _user(actor)
        row.done_at = timezone.now()
        row.na_reason = ""
        return True

    return _change_item(actor, run_item, expected_version, "tick", "run.item.ticked", apply)


def untick(actor: Any, run_item: RunItem, *, expected_version: int | None) -> RunItem:
    """Open the item again (from done or N/A)."""

    def apply(row: RunItem) -> bool:
        if row.state == RunItem.State.OPEN:
            return False
        row.state = RunItem.State.OPEN
        row.done_by = None
        row.done_at = None
        row.na_reason = ""
        return True

    return _change_item(actor, run_item, expected_version, "untick", "run.item.unticked", apply)


def mark_na(actor: Any, run_item: RunItem, *, reason: str, expected_version: int | None) -> RunItem:
    """Mark the item not applicable; the reason is required and kept with it."""
    reason = _one_line(reason, MAX_NA_REASON, "reason")

    def apply(row: RunItem) -> bool:
        if row.state == RunItem.State.NA and row.na_reason == reason:
            return False
        row.state = RunItem.State.NA
        row.na_reason = reason
        row.done_by = _user(actor)
        row.done_at = timezone.now()
        return True

    return _change_item(actor, run_item, expected_version, "na", "run.item.na", apply)


def set_note(actor: Any, run_item: RunItem, *, note: str, expected_version: int | None) -> RunItem:
    """Replace the item's note (empty clears it)."""
    note = str(note or "").replace("\r\n", "\n").strip()
    if len(note) > MAX_NOTE:
        raise ValidationError({"note": f"A note is at most {MAX_NOTE} characters."})

    def apply(row: RunItem) -> bool:
        if row.note == note:
            return False
        row.note = note
        return True

    return _change_item(actor, run_item, expected_version, "note", "run.item.noted", apply)


def sync_completion(run_id: int, actor: Any = None) -> None:
    """Complete the run when no item is open, reopen it when one is open again.

    Runs after the item change committed. A cheap read first; only when status and items
    disagree, the run row is locked exclusively and counted again (see _share_lock_run)."""
    # After every tick: one plain statement (the ORM's compile cost more than the query).
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT r.status, EXISTS (SELECT 1 FROM {RunItem._meta.db_table} i "  # noqa: S608
            "WHERE i.run_id = r.id AND i.state = %s) "
            f"FROM {Run._meta.db_table} r WHERE r.id = %s",
            [RunItem.State.OPEN, run_id],
        )
        row = cursor.fetchone()
    if row is None:
        return
    status, has_open = row
    if (status == Run.Status.OPEN) == has_open:
        return  # open with open items, or completed with none: nothing to do
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        has_open = run.items.filter(state=RunItem.State.OPEN).exists()
        if run.status == Run.Status.OPEN and not has_open:
            run.status, run.completed_at, verb = Run.Status.COMPLETED, timezone.now(), "completed"
        elif run.status == Run.Status.COMPLETED and has_open:
            run.status, run.completed_at, verb = Run.Status.OPEN, None, "reopened"
        else:
            return
        run.save(update_fields=["status", "completed_at"])
        events.publish(
            run.topic,
            f"run.{verb}",
            project=run.project_id,
            actor=actor,
            obj=run,
            before={"status": Run.Status.OPEN if verb == "completed" else Run.Status.COMPLETED},
            after={"status": run.status},
            data={"run": run.pk, "status": run.status},
        )


def reopen_for_new_build(actor: Any, run_ids: list[int], reason: str) -> list[RunItem]:
    """The build these runs vouch for changed (a release moved to another commit): reopen every
    done item whose template says its tick is proof about one build (see
    ``Item.reopens_on_new_build``), with its automated result cleared; the others keep their
    ticks. N/A items stay N/A: "does not apply" is a judgement about the release, not about a
    build. Returns the reopened items; each is a "run.item.reopened" event naming ``reason``.
    Runs inside the caller's transaction."""
    if not run_ids:
        return []
    for run_id in sorted(set(run_ids)):
        _share_lock_run(run_id)
    rows = (
        RunItem.objects.select_for_update(of=("self",))
        .select_related("item", "run")
        .filter(run_id__in=run_ids, state=RunItem.State.DONE)
        .order_by("pk")
    )
    now = timezone.now()
    reopened = []
    for row in rows:
        if not row.item.reopens_on_new_build:
            continue
        before = _snapshot(row)
        row.state = RunItem.State.OPEN
        row.done_by = None
        row.done_at = None
        row.version += 1
        row.changed_by = _user(actor)
        row.changed_at = now
        row.automation_passed = None
        row.automation_summary = ""
        row.automation_at = None
        row.save(update_fields=[*ITEM_STATE_FIELDS, *AUTOMATION_FIELDS])
        _publish_item(
            actor,
            row,
            row.run.project_id,
            "run.item.reopened",
            "untick",
            before,
            {"reason": reason, "text": row.item.text[:200]},
        )
        reopened.append(row)
    for run_id in sorted({r.run_id for r in reopened}):
        transaction.on_commit(lambda run_id=run_id: sync_completion(run_id, actor))
    return reopened


# --- Evidence ------------------------------------------------------------------------------


def _evidence_type(name: str, head: bytes) -> str:
    extension = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    allowed = EVIDENCE_TYPES.get(extension)
    if allowed is None:
        kinds = ", ".join(sorted(EVIDENCE_TYPES))
        raise ValidationError({"file": f"Files of this type are not accepted; use one of {kinds}."})
    content_type, magics = allowed
    if magics and not any(head.startswith(m) for m in magics):
        raise ValidationError({"file": f"The file's content is not a {extension[1:]} file."})
    if not magics and b"\x00" in head:
        raise ValidationError({"file": f"The file is binary, not {extension[1:]} text."})
    if extension == ".webp" and head[8:12] != b"WEBP":
        raise ValidationError({"file": "The file's content is not a webp image."})
    return content_type


def _bump_for_evidence(actor: Any, run_item: RunItem, verb: str, extra: dict[str, Any]) -> RunItem:
    current = _locked_item(run_item.pk)
    before = _snapshot(current)
    current.version += 1
    current.changed_by = _user(actor)
    current.changed_at = timezone.now()
    current.save(update_fields=["version", "changed_by", "changed_at"])
    _publish_item(actor, current, current.run.project_id, verb, "evidence", before, extra)
    return current


def add_evidence_file(actor: Any, run_item: RunItem, upload: Any) -> Evidence:
    """Store an uploaded file (Django's storage: a local folder, or the private Azure Blob
    container) as evidence of the item. At most 25 MiB, of an allowed type."""
    name = (getattr(upload, "name", "") or "").replace("\\", "/").rsplit("/", 1)[-1][:200]
    if not name:
        raise ValidationError({"file": "Choose a file."})
    size = getattr(upload, "size", None)
    if size is None or size > MAX_EVIDENCE_BYTES:
        raise ValidationError({"file": "Evidence files are at most 25 MiB."})
    if size == 0:
        raise ValidationError({"file": "The file is empty."})
    upload.seek(0)
    head = upload.read(8192)
    upload.seek(0)
    content_type = _evidence_type(name, head)
    run = Run.objects.only("pk", "project_id").get(pk=run_item.run_id)
    evidence = Evidence(
        run=run,
        run_item_id=run_item.pk,
        kind=Evidence.Kind.FILE,
        name=name,
        content_type=content_type,
        size=size,
        uploaded_by=_user(actor),
    )
    # The blob is written first (it may take a while and must not hold row locks); if the
    # rows then fail, the blob is removed again.
    evidence.file.save(name, upload, save=False)
    try:
        with transaction.atomic():
            evidence.save()
            _bump_for_evidence(
                actor,
                run_item,
                "run.item.evidence_added",
                {"evidence": {"id": evidence.pk, "name": name, "kind": "file", "size": size}},
            )
    except Exception:
        evidence.file.storage.delete(evidence.file.name)
        raise
    return evidence


_url_validator = URLValidator(schemes=["http", "https"])


def add_evidence_link(actor: Any, run_item: RunItem, url: str, name: str = "") -> Evidence:
    """Attach a link (a CI run, a dashboard, a ticket) as evidence of the item."""
    url = (url or "").strip()
    try:
        _url_validator(url)
    except ValidationError as exc:
        raise ValidationError({"url": "Give an http(s) link."}) from exc
    if len(url) > 2000:
        raise ValidationError({"url": "A link is at most 2000 characters."})
    name = _one_line(name, 200, "name", required=False) or (urlsplit(url).hostname or url)[:200]
    with transaction.atomic():
        evidence = Evidence.objects.create(
            run_id=run_item.run_id,
            run_item_id=run_item.pk,
            kind=Evidence.Kind.LINK,
            name=name,
            url=url,
            uploaded_by=_user(actor),
        )
        _bump_for_evidence(
            actor,
            run_item,
            "run.item.evidence_added",
            {"evidence": {"id": evidence.pk, "name": name, "kind": "link"}},
        )
    return evidence


def remove_evidence(actor: Any, evidence: Evidence) -> None:
    """Delete a piece of evidence (and its stored file, once the deletion committed).

    The last evidence of a done item that requires evidence stays: untick the item first."""
    with transaction.atomic():
        evidence = Evidence.objects.select_for_update().get(pk=evidence.pk)
        run_item = _locked_item(evidence.run_item_id)
        if (
            run_item.item.evidence_required
            and run_item.state == RunItem.State.DONE
            and not run_item.evidence.exclude(pk=evidence.pk).exists()
        ):
            raise ValidationError(
                "This is the only evidence of a done item that requires evidence; "
                "untick the item before removing it."
            )
        stored = evidence.file.name if evidence.kind == Evidence.Kind.FILE else ""
        storage = evidence.file.storage
        info = {"id": evidence.pk, "name": evidence.name, "kind": evidence.kind}
        evidence.delete()
        _bump_for_evidence(actor, run_item, "run.item.evidence_removed", {"evidence": info})
        if stored:
            transaction.on_commit(lambda: storage.delete(stored))


# --- Automated items -----------------------------------------------------------------------


def run_automated_item(actor: Any, run_item: RunItem) -> RunItem:
    """Run the item's automated check (see checklists.automation). Passed: the item is ticked
    with the check's response as text evidence. Failed: it stays open with the failure shown.
    ``actor`` is the person who pressed the button, or None when the system ran it."""
    current = RunItem.objects.select_related("item", "run", "run__environment", "run__project").get(
        pk=run_item.pk
    )
    if not current.item.automation:
        raise ValidationError("This item has no automated check.")
    if current.state != RunItem.State.OPEN:
        raise ValidationError(
            "This item is already done or N/A; open it again to re-run its check."
        )
    # The check may take seconds (it talks to the environment): no locks are held meanwhile.
    result = automation.execute(current)
    kind = current.item.automation.get("kind", "check")
    with transaction.atomic():
        _share_lock_run(current.run_id)
        row = _locked_item(current.pk)
        before = _snapshot(row)
        now = timezone.now()
        row.automation_passed = result.passed
        row.automation_summary = result.summary
        row.automation_at = now
        extra: dict[str, Any] = {"automated": True, "summary": result.summary}
        if actor is None:
            # Nobody pressed anything: the tick (or the failure) is the automation's own.
            extra["by"] = AUTOMATION_ACTOR
        verb = "run.item.automation_failed"
        if row.state == RunItem.State.OPEN:
            # Passed or failed, what the check answered is kept as the item's evidence.
            body = result.evidence_text or result.summary
            outcome = "response" if result.passed else "failure"
            evidence = Evidence.objects.create(
                run_id=row.run_id,
                run_item=row,
                kind=Evidence.Kind.TEXT,
                name=f"{kind} {outcome} {now:%Y-%m-%d %H:%M:%S %Z}",
                content_type="text/plain",
                size=len(body.encode()),
                text=body,
                uploaded_by=_user(actor),
                uploaded_at=now,
            )
            extra["evidence"] = {"id": evidence.pk, "name": evidence.name, "kind": "text"}
        if result.passed and row.state == RunItem.State.OPEN:
            row.state = RunItem.State.DONE
            row.done_by = _user(actor)
            row.done_at = now
            verb = "run.item.ticked"
        elif result.passed:
            verb = "run.item.automation_passed"
        row.version += 1
        row.changed_by = _user(actor)
        row.changed_at = now
        row.save(update_fields=[*ITEM_STATE_FIELDS, *AUTOMATION_FIELDS])
        _publish_item(actor, row, current.run.project_id, verb, "automation", before, extra)
        run_id = row.run_id
        transaction.on_commit(lambda: sync_completion(run_id, actor))
    return row


AUTOMATION_ACTOR = "automation"


def _queue_automation_on_commit(run_items: Any, now: datetime) -> list[int]:
    """Mark these items' checks as queued now and hand them to a worker once the transaction
    commits (a worker must find the rows). Returns their ids."""
    ids = list(run_items.values_list("pk", flat=True))
    if not ids:
        return ids
    RunItem.objects.filter(pk__in=ids).update(automation_queued_at=now)

    def enqueue() -> None:
        from .tasks import run_automated_item as task

        for pk in ids:
            task.delay(pk)

    transaction.on_commit(enqueue)
    return ids


def queue_due_automations(now: datetime | None = None) -> list[int]:
    """Beat, every minute: the automated items whose phase has begun (the run's planned start
    plus the item's T-offset) and whose check has not run or been queued since, are queued on
    the worker, once per phase. A run that opened after the phase began was queued when it
    opened. Returns the ids queued."""
    now = now or timezone.now()
    reach = timedelta(minutes=MAX_DUE_MINUTES + 1)
    candidates = (
        RunItem.objects.filter(
            state=RunItem.State.OPEN,
            run__status=Run.Status.OPEN,
            run__planned_start__gte=now - reach,
            run__planned_start__lte=now + reach,
            item__automation__isnull=False,
            item__due_offset_minutes__isnull=False,
        )
        .order_by("pk")
        .values_list(
            "pk",
            "run__planned_start",
            "run__created_at",
            "item__due_offset_minutes",
            "automation_queued_at",
            "automation_at",
        )
    )
    due = []
    for pk, planned_start, created_at, offset, queued_at, ran_at in candidates:
        phase_start = planned_start + timedelta(minutes=offset)
        if phase_start > now or phase_start <= created_at:
            continue
        if any(moment is not None and moment >= phase_start for moment in (queued_at, ran_at)):
            continue
        due.append((pk, queued_at))
    queued = []
    with transaction.atomic():
        for pk, queued_at in due:
            # Conditional on the queue mark read above: of two beats racing, one queues it.
            unchanged = RunItem.objects.select_for_update(of=("self",)).filter(
                pk=pk, state=RunItem.State.OPEN
            )
            unchanged = (
                unchanged.filter(automation_queued_at__isnull=True)
                if queued_at is None
                else unchanged.filter(automation_queued_at=queued_at)
            )
            queued += _queue_automation_on_commit(unchanged, now)
    return queued


# --- Recurring runs ------------------------------------------------------------------------


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError({"timezone": f"Unknown time zone '{name}'."}) from exc


@transaction.atomic
def create_schedule(
    actor: Any,
    template: ChecklistTemplate,
    *,
    environment: Environment,
    frequency: str,
    time_of_day: time,
    timezone_name: str = "UTC",
    weekday: int | None = None,
    day_of_month: int | None = None,
    deadline_minutes: int = 8 * 60,
) -> RecurringSchedule:
    """Have beat open a run of the template for the environment daily, weekly or monthly at
    ``time_of_day`` in ``timezone_name``; a run not completed ``deadline_minutes`` after its
    start is missed."""
    _refuse_archived(template)
    if environment.project_id != template.project_id:
        raise ValidationError({"environment": "That environment belongs to another project."})
    if frequency not in RecurringSchedule.Frequency.values:
        raise ValidationError({"frequency": "Choose daily, weekly or monthly."})
    _zone(timezone_name)
    if frequency == RecurringSchedule.Frequency.WEEKLY:
        if weekday is None or not 0 <= int(weekday) <= 6:
            raise ValidationError({"weekday": "Choose the day of the week."})
    else:
        weekday = None
    if frequency == RecurringSchedule.Frequency.MONTHLY:
        if day_of_month is None or not 1 <= int(day_of_month) <= 28:
            raise ValidationError({"day_of_month": "Choose a day from 1 to 28."})
    else:
        day_of_month = None
    if not 5 <= int(deadline_minutes) <= 31 * 24 * 60:
        raise ValidationError({"deadline_minutes": "A deadline is 5 minutes to 31 days."})
    schedule = RecurringSchedule.objects.create(
        project_id=template.project_id,
        template=template,
        environment=environment,
        frequency=frequency,
        timezone=timezone_name,
        time_of_day=time_of_day,
        weekday=weekday,
        day_of_month=day_of_month,
        deadline_minutes=deadline_minutes,
        created_by=_user(actor),
    )
    events.publish(
        f"project:{template.project_id}",
        "checklist_schedule.created",
        project=template.project_id,
        actor=actor,
        obj=schedule,
        after={
            "template": template.pk,
            "environment": environment.name,
            "frequency": frequency,
            "time_of_day": time_of_day.isoformat(),
            "timezone": timezone_name,
        },
    )
    return schedule


@transaction.atomic
def set_schedule_active(actor: Any, schedule: RecurringSchedule, active: bool) -> None:
    updated = RecurringSchedule.objects.filter(pk=schedule.pk, active=not active).update(
        active=active
    )
    if updated:
        events.publish(
            f"project:{schedule.project_id}",
            "checklist_schedule.resumed" if active else "checklist_schedule.paused",
            project=schedule.project_id,
            actor=actor,
            obj=schedule,
            before={"active": not active},
            after={"active": active},
        )


@transaction.atomic
def delete_schedule(actor: Any, schedule: RecurringSchedule) -> None:
    info = {"template": schedule.template_id, "environment": schedule.environment_id}
    schedule_id, project_id = schedule.pk, schedule.project_id
    schedule.delete()
    events.publish(
        f"project:{project_id}",
        "checklist_schedule.deleted",
        project=project_id,
        actor=actor,
        before=info,
        data={"schedule": schedule_id},
    )


def _month_back(day: date) -> date:
    return (day.replace(day=1) - timedelta(days=1)).replace(day=1)


def latest_occurrence(schedule: RecurringSchedule, now: datetime) -> datetime:
    """The most recent start of the schedule at or before ``now`` (aware, UTC)."""
    zone = ZoneInfo(schedule.timezone)
    local = now.astimezone(zone)
    today = local.date()
    if schedule.frequency == RecurringSchedule.Frequency.DAILY:
        day = today
        back = lambda d: d - timedelta(days=1)  # noqa: E731
    elif schedule.frequency == RecurringSchedule.Frequency.WEEKLY:
        day = today - timedelta(days=(today.weekday() - (schedule.weekday or 0)) % 7)
        back = lambda d: d - timedelta(days=7)  # noqa: E731
    else:
        dom = schedule.day_of_month or 1
        day = today.replace(day=dom) if today.day >= dom else _month_back(today).replace(day=dom)
        back = lambda d: _month_back(d).replace(day=dom)  # noqa: E731
    start = datetime.combine(day, schedule.time_of_day, tzinfo=zone)
    if start > local:
        start = datetime.combine(back(day), schedule.time_of_day, tzinfo=zone)
    return start.astimezone(UTC)


def create_due_recurring_runs(now: datetime | None = None) -> list[Run]:
    """Beat: open the run of each active schedule's latest occurrence if it has none yet.

    Safe to run twice and from two beats at once: an occurrence has at most one run (a unique
    constraint), and a second attempt finds it. Occurrences before the schedule existed are
    not back-filled."""
    now = now or timezone.now()
    opened: list[Run] = []
    schedules = RecurringSchedule.objects.filter(
        active=True, template__archived_at__isnull=True
    ).select_related("template", "environment")
    for schedule in schedules:
        start = latest_occurrence(schedule, now)
        if start < schedule.created_at or schedule.runs.filter(planned_start=start).exists():
            continue
        local_day = start.astimezone(ZoneInfo(schedule.timezone)).date()
        try:
            with transaction.atomic():
                run = _open_run(
                    None,
                    schedule.template,
                    environment=schedule.environment,
                    planned_start=start,
                    title=f"{schedule.template.name} — {schedule.environment.name}, "
                    f"{local_day:%a %d %b %Y}",
                    schedule=schedule,
                    deadline=start + timedelta(minutes=schedule.deadline_minutes),
                )
        except IntegrityError:
            continue  # another beat opened it a moment ago
        opened.append(run)
    return opened


def flag_missed_runs(now: datetime | None = None) -> int:
    """Beat: mark runs still open after their deadline as missed, once, and say so on the
    project's stream (the overview shows them)."""
    now = now or timezone.now()
    flagged = 0
    candidates = Run.objects.filter(
        status=Run.Status.OPEN, deadline__lt=now, missed_at__isnull=True
    ).select_related("environment")
    for run in candidates:
        with transaction.atomic():
            if not Run.objects.filter(pk=run.pk, missed_at__isnull=True).update(missed_at=now):
                continue
            events.publish(
                f"project:{run.project_id}",
                "run.missed",
                project=run.project_id,
                obj=run,
                after={"deadline": run.deadline.isoformat()},
                data={
                    "run": run.pk,
                    "title": run.title,
                    "environment": run.environment.name if run.environment else None,
                },
            )
            flagged += 1
    return flagged
