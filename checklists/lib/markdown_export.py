"""Write a runbook tree back to Markdown that ``parse_runbook`` reads into the same tree.

The contract is a round trip: sections (titles, hierarchy), items (text, severity, pre-checked,
sub-items, due offsets, owner role, evidence required), commands (language, code) and sign-off
roles survive ``parse_runbook(export_runbook(tree))``. Notes and details are written back as the
Markdown they are; their exact whitespace may change.

Values the text cannot carry on its own get an explicit marker that the importer strips again:

* severity: an item or heading whose words (or inheritance) would give another severity ends
  with ``[severity: warning]``; texts that already say NO-GO stay untouched;
* due offset: likewise ``[due: T-30 minutes]`` (``[due: none]`` to stop inheritance);
* an item's owner role and "evidence required", which Markdown has no words for:
  ``[owner: DevOps Engineer]`` and ``[evidence: required]``;
* title: written as front matter when it is not the first ``#`` heading;
* sign-off roles not found in the exported sections: a trailing ``## Sign-off`` section with
  ``- Role: ____ Date: ____`` lines.

An item must have visible text to render as a checkbox on GitHub, so an empty one is written
as ``(empty item)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .markdown_import import (
    SEVERITY_NONE,
    ParsedItem,
    ParsedRunbook,
    ParsedSection,
    due_offset_in_text,
    format_due_offset,
    item_severity_in_text,
    severity_in_text,
    signoff_roles_in_sections,
)

__all__ = ["export_runbook"]

_EMPTY_ITEM_TEXT = "(empty item)"
_MAX_HEADING_LEVEL = 6
_INDENT = "  "


def export_runbook(runbook: ParsedRunbook | Mapping[str, Any]) -> str:
    """Render a runbook (dataclasses, or the dict shape of ``ParsedRunbook.to_dict``)."""
    if not isinstance(runbook, ParsedRunbook):
        runbook = ParsedRunbook.from_dict(runbook)
    writer = _Writer()
    for index, section in enumerate(runbook.sections):
        headless = index == 0 and section.level == 0 and not section.title.strip()
        writer.section(section, parent_level=0, severity=SEVERITY_NONE, due=None, headless=headless)

    body = writer.text()
    missing_roles = _roles_missing_from(runbook.sections, runbook.signoff_roles)
    if missing_roles:
        lines = ["## Sign-off", ""]
        lines += [f"- {_one_line(role)}: ________________ Date: ________" for role in missing_roles]
        body = "\n\n".join(part for part in (body, "\n".join(lines)) if part)

    title = runbook.title.strip()
    if title and title != (writer.first_h1_title or writer.first_heading_title):
        # Front matter is the one place for a title that is not a heading; the importer reads
        # ``title:`` from it and GitHub shows it as metadata, not as content.
        body = f"---\ntitle: {json.dumps(title, ensure_ascii=False)}\n---\n\n{body}"
    return body.rstrip("\n") + "\n"


def _roles_missing_from(sections: list[ParsedSection], roles: list[str]) -> list[str]:
    if not roles:
        return []
    present = {role.casefold() for role in signoff_roles_in_sections(sections)}
    return [role for role in roles if _one_line(role).casefold() not in present]


def _one_line(text: str) -> str:
    # The same joining the importer applies to a multi-line item paragraph, so the text that
    # comes back is exactly the text written.
    return " ".join(line.strip() for line in text.split("\n")).strip()


def _heading_text(title: str) -> str:
    # A heading's trailing " #" run is a closing sequence that Markdown drops; one more run
    # absorbs that so a title like "Ticket #" keeps its own.
    return f"{title} #" if re.search(r"(?:^|\s)#+$", title) else title


def _markers(
    text: str,
    severity: str,
    due: int | None,
    inherited_severity: str,
    inherited_due: int | None,
    kind: str = "heading",
) -> str:
    words = (item_severity_in_text if kind == "item" else severity_in_text)(text)
    implied_severity = inherited_severity if words == SEVERITY_NONE else words
    found_due = due_offset_in_text(text)
    implied_due = inherited_due if found_due is None else found_due
    markers = []
    if (severity or SEVERITY_NONE) != implied_severity:
        markers.append(f"[severity: {severity or SEVERITY_NONE}]")
    if due != implied_due:
        markers.append(f"[due: {'none' if due is None else format_due_offset(due)}]")
    return "".join(f" {marker}" for marker in markers)


def _fence(code: str, language: str, indent: str) -> list[str]:
    # The fence must be longer than any backtick run inside, or the code would close it early.
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    info = _one_line(language)
    if "`" in info:
        marker = "~" * max(3, max((len(r) for r in re.findall(r"~+", code)), default=0) + 1)
    else:
        marker = "`" * max(3, longest + 1)
    lines = [f"{indent}{marker}{info}"]
    if code:
        lines += [f"{indent}{line}" if line else "" for line in code.split("\n")]
    lines.append(f"{indent}{marker}")
    return lines


def _last_bullet(notes: str) -> str:
    for line in reversed(notes.strip().split("\n")):
        match = re.match(r"\s*([-*+])\s", line)
        if match is not None:
            return match.group(1)
        if line.strip() and not line.startswith((" ", "\t")):
            return ""
    return ""


def _other_bullet(bullet: str) -> str:
    return "*" if bullet == "-" else "-"


def _label(label: str) -> list[str]:
    """A command's label as the importer reads it back: a bold line right above the fence."""
    text = _one_line(label).replace("*", "").replace("_", " ").strip().rstrip(":").strip()
    return [f"**{text}:**"] if text else []


def _indented(block: str, indent: str) -> list[str]:
    return [f"{indent}{line}" if line.strip() else "" for line in block.strip("\n").split("\n")]


class _Writer:
    def __init__(self) -> None:
        self.blocks: list[list[str]] = []
        self.first_heading_title: str | None = None
        self.first_h1_title: str | None = None

    def text(self) -> str:
        return "\n\n".join("\n".join(block) for block in self.blocks if block)

    def section(
        self,
        section: ParsedSection,
        parent_level: int,
        severity: str,
        due: int | None,
        headless: bool = False,
    ) -> None:
        level = parent_level
        if not headless:
            # A child heading must be deeper than its parent, or the hierarchy flattens.
            level = min(max(section.level, parent_level + 1), _MAX_HEADING_LEVEL)
            title = _one_line(section.title) or "Untitled section"
            if self.first_heading_title is None:
                self.first_heading_title = title
            if level == 1 and self.first_h1_title is None:
                self.first_h1_title = title
            marks = _markers(title, section.severity, section.due_offset_minutes, severity, due)
            self.blocks.append([f"{'#' * level} {_heading_text(title + marks)}"])
        if section.notes.strip():
            self.blocks.append(section.notes.strip("\n").split("\n"))
        # Section commands go before the items: a fence after an item would belong to it.
        for command in section.commands:
            if command.inline:
                continue  # it stands in the notes, where it was written
            label = _label(command.label)
            self.blocks.append(label + _fence(command.code, command.language, ""))
        if section.items:
            lines: list[str] = []
            # A list that ends the notes would run on into the items if it used their bullet.
            bullet = _other_bullet(_last_bullet(section.notes))
            group = ""
            for item in section.items:
                if item.group_label != group:
                    # A new list per group: its label right above it, or (for items after a
                    # group that have none) another bullet, which also starts a new list.
                    group, bullet = item.group_label, _other_bullet(bullet)
                    if lines:
                        lines.append("")
                    lines += _label(group)
                self.item(item, lines, "", section.severity, section.due_offset_minutes, bullet)
            self.blocks.append(lines)
        for child in section.children:
            self.section(child, level, section.severity, section.due_offset_minutes)

    def item(
        self,
        item: ParsedItem,
        lines: list[str],
        indent: str,
        severity: str,
        due: int | None,
        bullet: str = "-",
    ) -> None:
        text = _one_line(item.text) or _EMPTY_ITEM_TEXT
        marks = _markers(text, item.severity, item.due_offset_minutes, severity, due, "item")
        owner = _one_line(item.owner_role)
        if owner:
            marks += f" [owner: {owner}]"
        if item.evidence_required:
            marks += " [evidence: required]"
        lines.append(f"{indent}{bullet} [{'x' if item.pre_checked else ' '}] {text}{marks}")
        body_indent = indent + _INDENT
        if item.details.strip():
            # The blank line keeps details from continuing the item's text paragraph.
            lines.append("")
            lines += _indented(item.details, body_indent)
        for command in item.commands:
            lines.append("")
            lines += [f"{body_indent}{line}" for line in _label(command.label)]
            lines += _fence(command.code, command.language, body_indent)
        if item.details.strip() or item.commands:
            lines.append("")
        for child in item.children:
            self.item(child, lines, body_indent, item.severity, item.due_offset_minutes)
