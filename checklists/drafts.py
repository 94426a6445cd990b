"""A template version as an in-memory tree, and the two ways across: rows to tree, tree to rows.

Imports and edits both end in ``write_version(template, draft)``: an edit loads the current
version as a draft, changes the draft, and writes it as the next version. Nodes loaded from
rows remember their row's pk (``source_pk``) so an edit can find the node the user pointed at.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import connection

from .lib.markdown_import import Command, ParsedItem, ParsedRunbook, ParsedSection
from .models import ChecklistTemplate, Item, Section, Severity, TemplateVersion

BATCH = 1000


@dataclass
class ItemNode:
    text: str
    details: str = ""
    commands: list[dict[str, str]] = field(default_factory=list)
    group_label: str = ""
    severity: str = Severity.NONE
    owner_role: str = ""
    due_offset_minutes: int | None = None
    evidence_required: bool = False
    pre_checked: bool = False
    automation: dict[str, Any] | None = None
    independent_of_build: bool | None = None
    children: list[ItemNode] = field(default_factory=list)
    source_pk: int | None = None

    def walk(self) -> Iterator[ItemNode]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class SectionNode:
    title: str
    level: int = 2
    notes: str = ""
    commands: list[dict[str, str]] = field(default_factory=list)
    severity: str = Severity.NONE
    due_offset_minutes: int | None = None
    items: list[ItemNode] = field(default_factory=list)
    children: list[SectionNode] = field(default_factory=list)
    source_pk: int | None = None

    def walk(self) -> Iterator[SectionNode]:
        yield self
        for child in self.children:
            yield from child.walk()

    def walk_items(self) -> Iterator[ItemNode]:
        for item in self.items:
            yield from item.walk()


@dataclass
class Draft:
    title: str = ""
    signoff_roles: list[str] = field(default_factory=list)
    sections: list[SectionNode] = field(default_factory=list)

    def walk_sections(self) -> Iterator[SectionNode]:
        for section in self.sections:
            yield from section.walk()

    def walk_items(self) -> Iterator[ItemNode]:
        for section in self.walk_sections():
            yield from section.walk_items()

    def counts(self) -> dict[str, Any]:
        """The counts an import reports: sub-items count as items."""
        items = list(self.walk_items())
        gates = {"no_go": 0, "conditional": 0, "warning": 0}
        for item in items:
            key = item.severity.replace("-", "_")
            if key in gates:
                gates[key] += 1
        commands = sum(len(s.commands) for s in self.walk_sections()) + sum(
            len(i.commands) for i in items
        )
        return {
            "sections": sum(1 for _ in self.walk_sections()),
            "items": len(items),
            "commands": commands,
            "gates": gates,
            "signoff_roles": list(self.signoff_roles),
        }

    # --- finding nodes by the pk of the row they were loaded from ------------------------

    def find_section(self, pk: int) -> tuple[list[SectionNode], SectionNode] | None:
        """The section loaded from row ``pk`` and the list that holds it."""

        def search(siblings: list[SectionNode]) -> tuple[list[SectionNode], SectionNode] | None:
            for node in siblings:
                if node.source_pk == pk:
                    return siblings, node
                found = search(node.children)
                if found:
                    return found
            return None

        return search(self.sections)

    def find_item(self, pk: int) -> tuple[list[ItemNode], ItemNode] | None:
        def search(siblings: list[ItemNode]) -> tuple[list[ItemNode], ItemNode] | None:
            for node in siblings:
                if node.source_pk == pk:
                    return siblings, node
                found = search(node.children)
                if found:
                    return found
            return None

        for section in self.walk_sections():
            found = search(section.items)
            if found:
                return found
        return None


# --- from the parser -----------------------------------------------------------------------


def _commands(commands: list[Command]) -> list[dict[str, Any]]:
    """Commands as stored: language and code, a label when one names the block, and
    ``inline`` for a block that stands in the notes' text (shown there, not again below)."""
    rows: list[dict[str, Any]] = []
    for c in commands:
        row: dict[str, Any] = {"language": c.language, "code": c.code}
        if c.label:
            row["label"] = c.label
        if c.inline:
            row["inline"] = True
        rows.append(row)
    return rows


def _item_from_parsed(item: ParsedItem) -> ItemNode:
    return ItemNode(
        text=item.text,
        details=item.details,
        commands=_commands(item.commands),
        group_label=item.group_label,
        severity=item.severity,
        owner_role=item.owner_role,
        due_offset_minutes=item.due_offset_minutes,
        evidence_required=item.evidence_required,
        pre_checked=item.pre_checked,
        children=[_item_from_parsed(c) for c in item.children],
    )


def _section_from_parsed(section: ParsedSection) -> SectionNode:
    return SectionNode(
        title=section.title,
        level=section.level,
        notes=section.notes,
        commands=_commands(section.commands),
        severity=section.severity,
        due_offset_minutes=section.due_offset_minutes,
        items=[_item_from_parsed(i) for i in section.items],
        children=[_section_from_parsed(c) for c in section.children],
    )


def from_parsed(runbook: ParsedRunbook) -> Draft:
    return Draft(
        title=runbook.title,
        signoff_roles=list(runbook.signoff_roles),
        sections=[_section_from_parsed(s) for s in runbook.sections],
    )


# --- to the exporter -----------------------------------------------------------------------


def _parsed_commands(rows: list[dict[str, Any]]) -> list[Command]:
    return [
        Command(
            language=r.get("language", ""),
            code=r.get("code", ""),
            label=r.get("label", ""),
            inline=bool(r.get("inline")),
        )
        for r in rows
    ]


def _item_to_parsed(node: ItemNode) -> ParsedItem:
    return ParsedItem(
        text=node.text,
        details=node.details,
        severity=node.severity,
        due_offset_minutes=node.due_offset_minutes,
        pre_checked=node.pre_checked,
        commands=_parsed_commands(node.commands),
        children=[_item_to_parsed(c) for c in node.children],
        owner_role=node.owner_role,
        evidence_required=node.evidence_required,
        group_label=node.group_label,
    )


def _section_to_parsed(node: SectionNode) -> ParsedSection:
    return ParsedSection(
        title=node.title,
        level=node.level,
        notes=node.notes,
        commands=_parsed_commands(node.commands),
        items=[_item_to_parsed(i) for i in node.items],
        children=[_section_to_parsed(c) for c in node.children],
        severity=node.severity,
        due_offset_minutes=node.due_offset_minutes,
    )


def to_parsed(draft: Draft) -> ParsedRunbook:
    return ParsedRunbook(
        title=draft.title,
        sections=[_section_to_parsed(s) for s in draft.sections],
        signoff_roles=list(draft.signoff_roles),
    )


# --- rows <-> tree -------------------------------------------------------------------------

SECTION_FIELDS = ["title", "level", "notes", "commands", "severity", "due_offset_minutes"]
ITEM_FIELDS = [
    "text",
    "details",
    "commands",
    "group_label",
    "severity",
    "owner_role",
    "due_offset_minutes",
    "evidence_required",
    "pre_checked",
    "automation",
    "independent_of_build",
]


def load(version: TemplateVersion) -> Draft:
    """The version as a tree, in two queries."""
    sections: dict[int, SectionNode] = {}
    draft = Draft(title=version.title, signoff_roles=list(version.signoff_roles or []))
    for row in Section.objects.filter(version=version).order_by("position"):
        node = SectionNode(**{f: getattr(row, f) for f in SECTION_FIELDS}, source_pk=row.pk)
        sections[row.pk] = node
        if row.parent_id is None:
            draft.sections.append(node)
        else:
            sections[row.parent_id].children.append(node)
    items: dict[int, ItemNode] = {}
    for row in Item.objects.filter(version=version).order_by("position"):
        node = ItemNode(**{f: getattr(row, f) for f in ITEM_FIELDS}, source_pk=row.pk)
        items[row.pk] = node
        if row.parent_id is None:
            sections[row.section_id].items.append(node)
        else:
            items[row.parent_id].children.append(node)
    return draft


def write_version(
    template: ChecklistTemplate,
    draft: Draft,
    *,
    number: int,
    source: str,
    summary: str = "",
    actor: Any = None,
) -> TemplateVersion:
    """Write the draft as version ``number`` of the template (the caller holds the template's
    lock and sets ``current_version``), in a fixed number of statements whatever its size."""
    version = TemplateVersion.objects.create(
        template=template,
        number=number,
        title=draft.title[:300],
        signoff_roles=list(draft.signoff_roles),
        source=source,
        summary=summary[:300],
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )

    # Pre-order: a section's position is its index here; items follow their sections.
    section_rows: list[tuple[SectionNode, SectionNode | None, int]] = []

    def visit_section(node: SectionNode, parent: SectionNode | None, depth: int) -> None:
        section_rows.append((node, parent, depth))
        for child in node.children:
            visit_section(child, node, depth + 1)

    for top in draft.sections:
        visit_section(top, None, 0)

    item_rows: list[tuple[ItemNode, ItemNode | None, SectionNode, int]] = []

    def visit_item(
        node: ItemNode, parent: ItemNode | None, section: SectionNode, depth: int
    ) -> None:
        item_rows.append((node, parent, section, depth))
        for child in node.children:
            visit_item(child, node, section, depth + 1)

    for node, _parent, _depth in section_rows:
        for item in node.items:
            visit_item(item, None, node, 0)

    if connection.vendor == "postgresql":
        _copy_rows(version, section_rows, item_rows)
    else:
        _bulk_create_rows(version, section_rows, item_rows)
    return version


def _bulk_create_rows(version: TemplateVersion, section_rows: list, item_rows: list) -> None:
    """Level by level, so a parent has its pk before its children reference it."""
    saved_sections: dict[int, int] = {}
    by_depth: dict[int, list[tuple[int, SectionNode, SectionNode | None]]] = {}
    for position, (node, parent, depth) in enumerate(section_rows):
        by_depth.setdefault(depth, []).append((position, node, parent))
    for depth in sorted(by_depth):
        rows = [
            Section(
                version=version,
                parent_id=saved_sections[id(parent)] if parent is not None else None,
                position=position,
                depth=depth,
                **{f: getattr(node, f) for f in SECTION_FIELDS},
            )
            for position, node, parent in by_depth[depth]
        ]
        created = Section.objects.bulk_create(rows, batch_size=BATCH)
        for (_position, node, _parent), row in zip(by_depth[depth], created, strict=True):
            saved_sections[id(node)] = row.pk

    saved_items: dict[int, int] = {}
    items_by_depth: dict[int, list[tuple[int, ItemNode, ItemNode | None, SectionNode]]] = {}
    for position, (node, parent, section, depth) in enumerate(item_rows):
        items_by_depth.setdefault(depth, []).append((position, node, parent, section))
    for depth in sorted(items_by_depth):
        rows = [
            Item(
                version=version,
                section_id=saved_sections[id(section)],
                parent_id=saved_items[id(parent)] if parent is not None else None,
                position=position,
                depth=depth,
                **{f: getattr(node, f) for f in ITEM_FIELDS},
            )
            for position, node, parent, section in items_by_depth[depth]
        ]
        created = Item.objects.bulk_create(rows, batch_size=BATCH)
        for (_position, node, _parent, _section), row in zip(
            items_by_depth[depth], created, strict=True
        ):
            saved_items[id(node)] = row.pk


def _next_ids(cursor: Any, table: str, count: int) -> list[int]:
    if count == 0:
        return []
    cursor.execute(
        "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
        [table, count],
    )
    return [row[0] for row in cursor.fetchall()]


JSON_FIELDS = {"commands", "automation"}


def _values(node: Any, fields: list[str]) -> list[Any]:
    # COPY takes JSON columns as their text.
    return [
        (None if v is None else json.dumps(v, ensure_ascii=False)) if f in JSON_FIELDS else v
        for f in fields
        for v in (getattr(node, f),)
    ]


def _copy_rows(version: TemplateVersion, section_rows: list, item_rows: list) -> None:
    """PostgreSQL: take the ids from the sequences up front, then COPY every row at once.

    A 1 MiB runbook is some 12,000 items; bulk_create spent most of an import building SQL
    for them, COPY streams them in a fraction of that (the import's budget is 2 s)."""
    section_table, item_table = Section._meta.db_table, Item._meta.db_table
    with connection.cursor() as cursor:
        section_ids = _next_ids(cursor, section_table, len(section_rows))
        item_ids = _next_ids(cursor, item_table, len(item_rows))
        section_id = {
            id(node): pk for (node, _p, _d), pk in zip(section_rows, section_ids, strict=True)
        }
        item_id = {id(node): pk for (node, _p, _s, _d), pk in zip(item_rows, item_ids, strict=True)}
        raw = cursor.cursor  # psycopg's own cursor, for COPY
        columns = ["id", "version_id", "parent_id", "position", "depth", *SECTION_FIELDS]
        with raw.copy(f"COPY {section_table} ({', '.join(columns)}) FROM STDIN") as copy:
            for position, (node, parent, depth) in enumerate(section_rows):
                copy.write_row(
                    (
                        section_id[id(node)],
                        version.pk,
                        section_id[id(parent)] if parent is not None else None,
                        position,
                        depth,
                        *_values(node, SECTION_FIELDS),
                    )
                )
        columns = ["id", "version_id", "section_id", "parent_id", "position", "depth", *ITEM_FIELDS]
        with raw.copy(f"COPY {item_table} ({', '.join(columns)}) FROM STDIN") as copy:
            for position, (node, parent, section, depth) in enumerate(item_rows):
                copy.write_row(
                    (
                        item_id[id(node)],
                        version.pk,
                        section_id[id(section)],
                        item_id[id(parent)] if parent is not None else None,
                        position,
                        depth,
                        *_values(node, ITEM_FIELDS),
                    )
                )
