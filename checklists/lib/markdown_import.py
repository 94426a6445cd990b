"""Parse a Markdown deployment runbook into sections, checklist items and commands.

The parser follows what GitHub renders, because that is what the team sees when it reviews a
runbook: markdown-it builds the block structure (lists, fences, HTML blocks, front matter) and
a walk over its token stream picks out task-list items and fenced code. Source line ranges of
the tokens (``token.map``) give back everything else verbatim as section notes and item details.

Conventions recognised on top of plain Markdown:

* gates come only from explicit markers, never from a word in passing ("Test critical user
  flows" is no gate): a severity word in a heading (NO-GO / NO GO, CONDITIONAL, WARNING, and
  CRITICAL in capitals), in an item a tag — ``(NO-GO)``, ``[WARNING]``, ``(CONDITIONAL - …)``
  or a leading ``WARNING:`` —, the emoji 🛑 ⛔ ⚠️, and a table with a Severity column (each
  row an item). A heading's severity reaches every item beneath it. Each marker is reported
  with its line (``ParsedRunbook.gates``) so a person can check them, and ``not_gates`` (line
  numbers) makes the parse ignore the ones that were not meant as gates;
* time phases (``T-2 hours``, ``T-0``, ``T+15 minutes``, ``T-30m``, ``T-1 day``) in a heading or
  an item set the due offset in minutes relative to the planned start;
* a trailing ``[severity: warning]`` / ``[due: T-30 minutes]`` on an item or heading states the
  value explicitly (the exporter writes these when the text alone would say something else) and
  is removed from the text; on an item, ``[owner: DevOps Engineer]`` and ``[evidence: required]``
  carry the fields that plain Markdown has no words for, so an export imports back whole;
* a sign-off / approval section lists roles as ``Role: ____ Date: ____`` lines, also written
  as task lines; they are roles to sign, never items to tick;
* a one-line label right above a fence (``**DHL Configuration:**``, ``For Production:``) is the
  command's label, and a fence inside a plain numbered or bulleted step stays in that step
  (a command shown in the notes where it stands, ``Command.inline``); the same label right
  above a task list frames its items (``ParsedItem.group_label``).
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.front_matter import front_matter_plugin

from .mojibake import repair_mojibake

__all__ = [
    "MAX_RUNBOOK_BYTES",
    "GateMarker",
    "SEVERITIES",
    "Command",
    "ParsedItem",
    "ParsedRunbook",
    "ParsedSection",
    "RunbookImportError",
    "decode_upload",
    "due_offset_in_text",
    "format_due_offset",
    "is_signoff_title",
    "item_severity_in_text",
    "parse_runbook",
    "severity_in_text",
    "signoff_roles_in_sections",
    "strip_markers",
]

MAX_RUNBOOK_BYTES = 1_048_576

SEVERITY_NONE = "none"
SEVERITY_WARNING = "warning"
SEVERITY_CONDITIONAL = "conditional"
SEVERITY_NO_GO = "no-go"
# Ordered from harmless to blocking: when a text carries several words, the strongest wins.
SEVERITIES = (SEVERITY_NONE, SEVERITY_WARNING, SEVERITY_CONDITIONAL, SEVERITY_NO_GO)


class RunbookImportError(ValueError):
    """The text cannot be imported as a runbook; the message says why, for the uploader."""


@dataclass
class Command:
    language: str
    code: str
    # The line that names the block ("DHL Configuration", "For Production", the step's title).
    label: str = ""
    # Stands inside the notes' text (in a plain numbered step), so it is shown there.
    inline: bool = False


@dataclass
class GateMarker:
    """What made a gate: the marker, its 1-based line, and how many items it gave a severity."""

    line: int
    marker: str
    severity: str
    source: str  # "heading", "item" or "table"
    text: str
    items: int = 0
    # A person said this marker is no gate (``not_gates``): reported, but it set no severity.
    ignored: bool = False


@dataclass
class ParsedItem:
    text: str
    details: str = ""
    severity: str = SEVERITY_NONE
    due_offset_minutes: int | None = None
    pre_checked: bool = False
    commands: list[Command] = field(default_factory=list)
    children: list[ParsedItem] = field(default_factory=list)
    owner_role: str = ""
    evidence_required: bool = False
    # "For Production" when the runbook wrote "**For Production:**" right above the list.
    group_label: str = ""

    def iter_items(self) -> Iterator[ParsedItem]:
        """This item and all its sub-items, depth first in document order."""
        yield self
        for child in self.children:
            yield from child.iter_items()


@dataclass
class ParsedSection:
    title: str
    level: int
    notes: str = ""
    commands: list[Command] = field(default_factory=list)
    items: list[ParsedItem] = field(default_factory=list)
    children: list[ParsedSection] = field(default_factory=list)
    severity: str = SEVERITY_NONE
    due_offset_minutes: int | None = None

    def iter_sections(self) -> Iterator[ParsedSection]:
        yield self
        for child in self.children:
            yield from child.iter_sections()

    def iter_items(self) -> Iterator[ParsedItem]:
        """Items of this section only (sub-items included, subsections excluded)."""
        for item in self.items:
            yield from item.iter_items()


@dataclass
class ParsedRunbook:
    title: str
    sections: list[ParsedSection] = field(default_factory=list)
    signoff_roles: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    gates: list[GateMarker] = field(default_factory=list)

    def iter_sections(self) -> Iterator[ParsedSection]:
        for section in self.sections:
            yield from section.iter_sections()

    def iter_items(self) -> Iterator[ParsedItem]:
        for section in self.iter_sections():
            yield from section.iter_items()

    def iter_commands(self) -> Iterator[Command]:
        for section in self.iter_sections():
            yield from section.commands
            for item in section.iter_items():
                yield from item.commands

    def section_count(self) -> int:
        return sum(1 for _ in self.iter_sections())

    def item_count(self) -> int:
        return sum(1 for _ in self.iter_items())

    def command_count(self) -> int:
        return sum(1 for _ in self.iter_commands())

    def checked_count(self) -> int:
        return sum(1 for item in self.iter_items() if item.pre_checked)

    def gate_counts(self) -> dict[str, int]:
        counts = {"no_go": 0, "conditional": 0, "warning": 0}
        for item in self.iter_items():
            key = item.severity.replace("-", "_")
            if key in counts:
                counts[key] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParsedRunbook:
        """Build from the shape ``to_dict`` produces (e.g. a preview stored as JSON)."""
        return cls(
            title=str(data.get("title") or ""),
            sections=[_section_from_dict(s) for s in data.get("sections") or ()],
            signoff_roles=[str(r) for r in data.get("signoff_roles") or ()],
            warnings=[str(w) for w in data.get("warnings") or ()],
            gates=[
                GateMarker(
                    line=int(g.get("line") or 0),
                    marker=str(g.get("marker") or ""),
                    severity=str(g.get("severity") or SEVERITY_NONE),
                    source=str(g.get("source") or ""),
                    text=str(g.get("text") or ""),
                    items=int(g.get("items") or 0),
                    ignored=bool(g.get("ignored")),
                )
                for g in data.get("gates") or ()
            ],
        )


def _commands_from_dicts(rows: Any) -> list[Command]:
    return [
        Command(
            language=str(c.get("language") or ""),
            code=str(c.get("code") or ""),
            label=str(c.get("label") or ""),
            inline=bool(c.get("inline")),
        )
        for c in rows or ()
    ]


def _item_from_dict(data: Mapping[str, Any]) -> ParsedItem:
    return ParsedItem(
        text=str(data.get("text") or ""),
        details=str(data.get("details") or ""),
        severity=str(data.get("severity") or SEVERITY_NONE),
        due_offset_minutes=data.get("due_offset_minutes"),
        pre_checked=bool(data.get("pre_checked")),
        commands=_commands_from_dicts(data.get("commands")),
        children=[_item_from_dict(c) for c in data.get("children") or ()],
        owner_role=str(data.get("owner_role") or ""),
        evidence_required=bool(data.get("evidence_required")),
        group_label=str(data.get("group_label") or ""),
    )


def _section_from_dict(data: Mapping[str, Any]) -> ParsedSection:
    return ParsedSection(
        title=str(data.get("title") or ""),
        level=int(data.get("level") or 0),
        notes=str(data.get("notes") or ""),
        commands=_commands_from_dicts(data.get("commands")),
        items=[_item_from_dict(i) for i in data.get("items") or ()],
        children=[_section_from_dict(c) for c in data.get("children") or ()],
        severity=str(data.get("severity") or SEVERITY_NONE),
        due_offset_minutes=data.get("due_offset_minutes"),
    )


# --- words and phases -----------------------------------------------------------------------

# In a heading, a severity word anywhere is a marker ("GATE-002 (CRITICAL - NO-GO)"); "critical"
# only in capitals, since "Critical path" is a topic, not a gate. "No go-live today" is not a
# gate either, hence the lookarounds that refuse a hyphenated word.
_NO_GO_WORD = r"(?<![\w-])(?:(?i:no[\s_-]?go)|CRITICAL)(?![\w-])"
_CONDITIONAL_WORD = r"(?<![\w-])(?i:conditional)(?![\w-])"
_WARNING_WORD = r"(?<![\w-])(?i:warning)(?![\w-])"
_HEADING_SEVERITY = (
    (SEVERITY_NO_GO, re.compile(f"{_NO_GO_WORD}|🛑|⛔")),
    (SEVERITY_CONDITIONAL, re.compile(_CONDITIONAL_WORD)),
    (SEVERITY_WARNING, re.compile(f"{_WARNING_WORD}|⚠")),
)
# In an item only a tag counts: the word opening a bracket or parenthesis ("(NO-GO)",
# "[WARNING]", "(CONDITIONAL - staging only)") or the item ("WARNING: …", "**NO-GO:** …"), and
# the emoji. "Test critical user flows" or "fix compiler warnings" stay plain steps.
_TAG = r"(?:[\(\[]\s*(?:{word})(?:\s*[-–—:,][^\)\]]*)?\s*[\)\]]|^[*_]*\s*(?:{word})\s*[*_]*\s*:)"
_ANY_CASE_NO_GO = r"(?<![\w-])(?i:no[\s_-]?go|critical)(?![\w-])"
_ITEM_SEVERITY = (
    (SEVERITY_NO_GO, re.compile(_TAG.format(word=_ANY_CASE_NO_GO) + "|🛑|⛔")),
    (SEVERITY_CONDITIONAL, re.compile(_TAG.format(word=_CONDITIONAL_WORD))),
    (SEVERITY_WARNING, re.compile(_TAG.format(word=_WARNING_WORD) + "|⚠")),
)


# Every severity word or emoji in one search: most lines of a big runbook have none, and then
# the three patterns above need not run at all.
_ANY_SEVERITY = re.compile(r"(?i:no[\s_-]?go|critical|conditional|warning)|⚠|🛑|⛔")


def _severity_marker(text: str, patterns: tuple) -> tuple[str, str]:
    if _ANY_SEVERITY.search(text) is None:
        return SEVERITY_NONE, ""
    for severity, pattern in patterns:
        match = pattern.search(text)
        if match is not None:
            return severity, match.group(0).strip()
    return SEVERITY_NONE, ""


def severity_in_text(text: str) -> str:
    """The strongest severity a heading's ``text`` declares, or ``"none"``."""
    return _severity_marker(text, _HEADING_SEVERITY)[0]


def item_severity_in_text(text: str) -> str:
    """The strongest severity an item's ``text`` declares with a tag, or ``"none"``."""
    return _severity_marker(text, _ITEM_SEVERITY)[0]


_TABLE_SEVERITY_HEADERS = frozenset({"severity", "gate"})


def _table_cell_severity(cell: str) -> str:
    words = cell.strip().strip("*_`").strip()
    found, _marker = _severity_marker(words, _HEADING_SEVERITY)
    if found == SEVERITY_NONE and re.fullmatch(r"(?i:critical|blocker|blocking)", words):
        return SEVERITY_NO_GO
    return found


_UNIT_MINUTES = {"m": 1, "h": 60, "d": 1440, "w": 10080}
# A capital T right before the sign keeps "PORT-1" or "t-shirt" from counting.
_PHASE = re.compile(
    r"(?<![\w])T\s?([+\-−–])\s?(\d{1,5})"
    r"(?:\s?(?i:(minutes?|mins?|m|hours?|hrs?|h|days?|d|weeks?|w)))?(?![\w])"
)


def due_offset_in_text(text: str) -> int | None:
    """Signed minutes of the first time phase (``T-2 hours``) in ``text``, or None."""
    match = _PHASE.search(text)
    if match is None:
        return None
    sign, amount, unit = match.groups()
    minutes = int(amount) * _UNIT_MINUTES[(unit or "m")[0].lower()]
    return minutes if sign == "+" else -minutes


def format_due_offset(minutes: int) -> str:
    """The phase notation ``due_offset_in_text`` reads back: ``T-2 hours``, ``T+15 minutes``."""
    if minutes == 0:
        return "T-0"
    sign = "+" if minutes > 0 else "-"
    amount = abs(minutes)
    for size, unit in ((1440, "day"), (60, "hour")):
        if amount % size == 0:
            count = amount // size
            return f"T{sign}{count} {unit}{'' if count == 1 else 's'}"
    return f"T{sign}{amount} minute{'' if amount == 1 else 's'}"


_MARKER = re.compile(r"\s*\[(severity|due|owner|evidence):\s*([^\[\]]*?)\s*\]\s*$", re.I)
_NO_DUE = "none"
_EVIDENCE_REQUIRED = "required"
HEADING_MARKERS = frozenset({"severity", "due"})
ITEM_MARKERS = frozenset({"severity", "due", "owner", "evidence"})


@dataclass
class _Markers:
    severity: str | None = None
    has_due: bool = False
    due: int | None = None
    owner: str | None = None
    evidence_required: bool = False


NO_MARKERS = _Markers()


def strip_markers(text: str, kinds: frozenset[str] = HEADING_MARKERS) -> tuple[str, _Markers]:
    """Remove trailing markers of the given ``kinds`` (``[severity: …]``, ``[due: …]``, and for
    items ``[owner: …]``, ``[evidence: required]``) and return what they said (the shared
    ``NO_MARKERS`` when there are none: a big runbook's lines mostly have none)."""
    match = _MARKER.search(text)
    if match is None:
        return text, NO_MARKERS
    markers = _Markers()
    while True:
        if match is None:
            return text, markers
        kind, value = match.group(1).lower(), match.group(2).strip().lower()
        if kind not in kinds:
            return text, markers
        if kind == "owner" and markers.owner is None and value:
            markers.owner = match.group(2).strip()
        elif kind == "evidence" and value == _EVIDENCE_REQUIRED and not markers.evidence_required:
            markers.evidence_required = True
        elif kind == "severity" and value in SEVERITIES and markers.severity is None:
            markers.severity = value
        elif kind == "due" and not markers.has_due:
            if value == _NO_DUE:
                markers.has_due, markers.due = True, None
            elif (due := due_offset_in_text(match.group(2).strip())) is not None:
                markers.has_due, markers.due = True, due
            else:
                return text, markers
        else:
            return text, markers
        text = text[: match.start()]
        match = _MARKER.search(text)


_SIGNOFF_TITLE = re.compile(r"sign[\s-]?off|approval", re.I)


def is_signoff_title(title: str) -> bool:
    return _SIGNOFF_TITLE.search(title) is not None


# --- decoding and sanity checks ------------------------------------------------------------

_NON_TEXT = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ufffd]")
_NON_TEXT_SAMPLE = 65_536
# Real runbooks carry at most a stray control character; a few percent means a binary file
# (an image, a PDF, a zip) was uploaded by mistake.
_NON_TEXT_RATIO = 0.05


def _refuse_binary_text(text: str) -> None:
    if "\x00" in text:
        raise RunbookImportError(
            "This looks like a binary file (it contains NUL bytes), not Markdown."
        )
    sample = text[:_NON_TEXT_SAMPLE]
    if sample and len(_NON_TEXT.findall(sample)) > len(sample) * _NON_TEXT_RATIO:
        raise RunbookImportError("This looks like a binary file, not Markdown text.")


def _refuse_too_large(size: int) -> None:
    if size > MAX_RUNBOOK_BYTES:
        raise RunbookImportError(
            f"The runbook is {size:,} bytes; the limit is {MAX_RUNBOOK_BYTES:,} bytes (1 MiB)."
        )


def decode_upload(data: bytes) -> str:
    """Decode an uploaded file: UTF-8 (with or without BOM), else Windows-1252."""
    _refuse_too_large(len(data))
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        # UTF-16 is full of NUL bytes, so it has to be recognised before the binary check.
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise RunbookImportError(
                "The file claims to be UTF-16 but is not valid UTF-16."
            ) from exc
        _refuse_binary_text(text)
        return text
    if b"\x00" in data:
        raise RunbookImportError(
            "This looks like a binary file (it contains NUL bytes), not Markdown."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError as exc:
            raise RunbookImportError(
                "The file is neither UTF-8 nor Windows-1252 text; save it as UTF-8 and retry."
            ) from exc
    _refuse_binary_text(text)
    return text


# --- parsing ---------------------------------------------------------------------------------


def _build_markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark").enable("table").use(front_matter_plugin)
    # Only block structure matters here: item texts and titles are kept as Markdown source,
    # and skipping inline parsing saves a good share of the time on large runbooks.
    md.disable("inline")
    return md


_MARKDOWN = _build_markdown()

# GitHub renders a checkbox only when the marker is followed by whitespace and then text.
_TASK_MARKER = re.compile(r"\[([ \txX])\][ \t\n\v\f\r]+(?=\S)")
_TASK_LINE = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s+\[[ xX]\]\s+\S", re.M)

# Sign-off lines: "Backend Engineer: ____ Date: ____", "**Security Review**: ___",
# optionally as list or task items.
_LINE_PREFIX = re.compile(r"^\s*(?:>\s*)*(?:(?:[-*+]|\d{1,9}[.)])\s+)?(?:\[[ xX]\]\s+)?")
_ROLE_LINE = re.compile(r"^(?P<label>[^:\n]{1,80}?)\s*:\s*(?:\*\*|\*|__)?\s*_{3,}")
# "Deployment Date: ____" or "Approved By: ____" are fields of the form, not roles to sign.
_FIELD_LABEL_END = re.compile(
    r"(?:^|\s)(?:date|by|time|signature|signed|name|when|on|at|version)$", re.I
)


class _Mark:
    """Sentinel owners for source lines that belong to no section or item body."""

    def __init__(self, name: str) -> None:
        self.name = name


_HEADING = _Mark("heading")
_FENCE = _Mark("fence")
_LABEL = _Mark("command label")
_TABLE = _Mark("gate table")
_ITEM_TEXT = _Mark("item text")
_FRONT_MATTER = _Mark("front matter")


@dataclass
class _RawSection:
    section: ParsedSection
    markers: _Markers
    start: int
    end: int = -1


class _ListLabel:
    """The label paragraph right above an open list: it frames the list's task items when the
    list starts with one (a list of plain bullets keeps its label in the notes)."""

    __slots__ = ("found", "started")

    def __init__(self, found: tuple[Token, str] | None) -> None:
        self.found = found
        self.started = False


class _PlainItem:
    """A list item without a checkbox (a numbered step, a bullet): its first line names it."""

    __slots__ = ("label",)

    def __init__(self, label: str) -> None:
        self.label = label


# A one-line label above a fence: "**DHL Configuration:**", "__Dry run__", "For Production:".
_LABEL_LINE = re.compile(
    r"(?:\*\*|__)(?P<bold>[^*_\n]{1,100}?)(?:\*\*|__)\s*:?|(?P<plain>[^\n]{1,80}):"
)
_STEP_PREFIX = re.compile(r"^(?:\*\*|__)(.+?)(?:\*\*|__)\s*:?$")


def _is_task(tokens: list[Token], index: int) -> bool:
    """Whether the list item opening at ``index`` is a checkbox line."""
    return (
        index + 2 < len(tokens)
        and tokens[index + 1].type == "paragraph_open"
        and _TASK_MARKER.match(tokens[index + 2].content) is not None
    )


def _open_task(list_items: list[ParsedItem | _PlainItem | None]) -> ParsedItem | None:
    return next((i for i in reversed(list_items) if isinstance(i, ParsedItem)), None)


class _TreeBuilder:
    """One pass over markdown-it's tokens; every source line gets exactly one owner."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.owner: list[object | None] = [None] * len(lines)
        self.root = _RawSection(ParsedSection(title="", level=0), _Markers(), start=0)
        self.current = self.root
        self.top_level: list[ParsedSection] = []
        self.open_headings: list[_RawSection] = []
        self.raw_sections: list[_RawSection] = [self.root]
        self.section_markers: dict[int, _Markers] = {id(self.root.section): self.root.markers}
        # 1-based source line of each heading and item, for the gate report.
        self.lines_of: dict[int, int] = {}
        self.items: list[ParsedItem] = []
        # Only items that carry markers: most have none, and a 1 MiB runbook has 12,000 items.
        self.item_markers: dict[int, _Markers] = {}
        # Items from a table's rows: the severity its Severity cell names, and that cell.
        self.table_severity: dict[int, tuple[str, str]] = {}
        self.table_items: set[int] = set()
        self.front_matter = ""
        self.hidden_task_lines = 0
        self.first_heading_title: str | None = None
        self.first_h1_title: str | None = None
        self.signoff_depth: int | None = None

    def claim(self, token: Token, owner: object) -> None:
        if token.map is None:
            return
        start, end = token.map
        self.owner[start:end] = [owner] * (end - start)

    def in_signoff(self) -> bool:
        return self.signoff_depth is not None

    def build(self, tokens: list[Token]) -> None:
        # Open list items, innermost last; plain bullets and steps are _PlainItem (or None
        # when they have no text of their own).
        list_items: list[ParsedItem | _PlainItem | None] = []
        # Open lists, innermost last: the label written right above each, if any.
        self.list_labels: list[_ListLabel] = []
        for index, token in enumerate(tokens):
            kind = token.type
            if token.level == 0 and token.nesting != -1 and kind != "heading_open":
                if kind == "front_matter":
                    self.front_matter = token.content
                    self.claim(token, _FRONT_MATTER)
                    continue
                self.claim(token, self.current.section)
            if kind == "heading_open" and token.level == 0:
                self.open_section(token, tokens[index + 1].content)
            elif kind == "list_item_open":
                if self.list_labels and not self.list_labels[-1].started:
                    self.list_labels[-1].started = True
                    if not _is_task(tokens, index):
                        self.list_labels[-1].found = None
                item = self.open_item(tokens, index, list_items)
                list_items.append(item)
            elif kind == "list_item_close":
                list_items.pop()
            elif kind in ("bullet_list_open", "ordered_list_open"):
                self.list_labels.append(_ListLabel(self.label_above(tokens, index)))
            elif kind in ("bullet_list_close", "ordered_list_close"):
                self.list_labels.pop()
            elif kind == "fence":
                self.add_command(tokens, index, list_items)
            elif kind == "table_open" and token.level == 0:
                self.add_table(tokens, index)
            elif kind == "html_block":
                self.hidden_task_lines += len(_TASK_LINE.findall(token.content))

    def finish(self) -> None:
        self.current.end = len(self.lines)

    def open_section(self, token: Token, content: str) -> None:
        assert token.map is not None
        self.claim(token, _HEADING)
        self.current.end = token.map[0]
        # Setext headings may span lines; a title is one line.
        raw_title = " ".join(part.strip() for part in content.split("\n")).strip()
        title, markers = strip_markers(raw_title)
        level = int(token.tag[1])
        section = ParsedSection(title=title, level=level)
        if self.first_heading_title is None:
            self.first_heading_title = title
        if level == 1 and self.first_h1_title is None:
            self.first_h1_title = title
        while self.open_headings and self.open_headings[-1].section.level >= level:
            self.open_headings.pop()
        # The level of the sign-off heading this section is in (itself or an ancestor), if any.
        if self.signoff_depth is not None and level <= self.signoff_depth:
            self.signoff_depth = None
        if self.signoff_depth is None and is_signoff_title(title):
            self.signoff_depth = level
        if self.open_headings:
            self.open_headings[-1].section.children.append(section)
        else:
            self.top_level.append(section)
        self.lines_of[id(section)] = token.map[0] + 1
        raw = _RawSection(section, markers, start=token.map[1])
        self.section_markers[id(section)] = markers
        self.open_headings.append(raw)
        self.raw_sections.append(raw)
        self.current = raw

    def open_item(
        self, tokens: list[Token], index: int, list_items: list[ParsedItem | _PlainItem | None]
    ) -> ParsedItem | _PlainItem | None:
        if index + 2 >= len(tokens) or tokens[index + 1].type != "paragraph_open":
            return None
        paragraph = tokens[index + 2].content
        match = _TASK_MARKER.match(paragraph)
        if match is None:
            first = paragraph.split("\n", 1)[0].strip()
            step = _STEP_PREFIX.match(first)
            return _PlainItem(step.group(1).strip() if step else first)
        if self.in_signoff() and _role_from_line(paragraph.split("\n", 1)[0]):
            # "- [ ] Backend Engineer: ____ Date: ____" is a role to sign, not a step to tick;
            # the line stays in the section's notes, where the roles are read from.
            return None
        body = " ".join(line.strip() for line in paragraph[match.end() :].split("\n"))
        text, markers = strip_markers(body.strip(), ITEM_MARKERS)
        item = ParsedItem(
            text=text,
            pre_checked=match.group(1) in "xX",
            owner_role=markers.owner or "",
            evidence_required=markers.evidence_required,
        )
        self.items.append(item)
        if markers is not NO_MARKERS:
            self.item_markers[id(item)] = markers
        if tokens[index].map is not None:
            self.lines_of[id(item)] = tokens[index].map[0] + 1
        parent = _open_task(list_items)
        if parent is not None:
            parent.children.append(item)
        else:
            self.current.section.items.append(item)
            if self.list_labels and self.list_labels[-1].found is not None:
                # "**For Production:**" right above the list frames its items.
                opening, item.group_label = self.list_labels[-1].found
                self.claim(opening, _LABEL)
        self.claim(tokens[index], item)
        self.claim(tokens[index + 1], _ITEM_TEXT)
        return item

    def add_command(
        self, tokens: list[Token], index: int, list_items: list[ParsedItem | _PlainItem | None]
    ) -> None:
        token = tokens[index]
        info = token.info.strip()
        command = Command(
            language=info.split(maxsplit=1)[0] if info else "",
            code=token.content.removesuffix("\n"),
        )
        label_paragraph = self.label_above(tokens, index)
        enclosing = _open_task(list_items)
        section = self.current.section
        innermost = list_items[-1] if list_items else None
        if enclosing is None and isinstance(innermost, _PlainItem):
            # A fence inside a plain numbered step ("2. **Execute Rollback**") belongs to that
            # step: it stays in the notes' text where it stands, and is counted as a command.
            command.inline = True
            command.label = innermost.label
            section.commands.append(command)
            return
        self.claim(token, _FENCE)
        if label_paragraph is not None:
            opening, command.label = label_paragraph
            self.claim(opening, _LABEL)
        if enclosing is not None:
            enclosing.commands.append(command)
        elif section.items:
            # A command right after a checklist belongs to the step it follows.
            section.items[-1].commands.append(command)
        else:
            section.commands.append(command)

    def label_above(self, tokens: list[Token], index: int) -> tuple[Token, str] | None:
        """The one-line paragraph right above a fence or a list (no blank line between) and
        its text, when it reads as a label; the caller claims its line for the block."""
        fence = tokens[index]
        if index < 3 or fence.map is None or tokens[index - 1].type != "paragraph_close":
            return None
        opening, inline = tokens[index - 3], tokens[index - 2]
        if (
            opening.type != "paragraph_open"
            or opening.map is None
            or opening.map[1] != fence.map[0]
            or opening.map[1] - opening.map[0] != 1
        ):
            return None
        match = _LABEL_LINE.fullmatch(inline.content.strip())
        if match is None:
            return None
        label = (match.group("bold") or match.group("plain") or "").strip().rstrip(":").strip()
        if not label or _TASK_MARKER.match(label):
            return None
        return opening, label

    def add_table(self, tokens: list[Token], index: int) -> None:
        """A table with a Severity column lists gates: each row becomes an item."""
        rows: list[tuple[Token, list[str]]] = []
        position = index + 1
        row: list[str] | None = None
        row_token: Token | None = None
        while position < len(tokens) and tokens[position].type != "table_close":
            current = tokens[position]
            if current.type == "tr_open":
                row, row_token = [], current
            elif current.type == "inline" and row is not None:
                row.append(current.content.strip())
            elif current.type == "tr_close" and row is not None and row_token is not None:
                rows.append((row_token, row))
                row = None
            position += 1
        if len(rows) < 2:
            return
        header = [cell.strip("*_` ").casefold() for cell in rows[0][1]]
        column = next((i for i, h in enumerate(header) if h in _TABLE_SEVERITY_HEADERS), None)
        if column is None:
            return
        self.claim(tokens[index], _TABLE)
        names = rows[0][1]
        for row_token, cells in rows[1:]:
            texts = [(i, c) for i, c in enumerate(cells) if i != column and c]
            if not texts:
                continue
            first = texts[0][0]
            details = "\n".join(
                f"{names[i].strip('*_ ')}: {c}" for i, c in texts[1:] if i < len(names)
            )
            item = ParsedItem(text=cells[first], details=details)
            self.items.append(item)
            self.table_items.add(id(item))
            self.current.section.items.append(item)
            severity = _table_cell_severity(cells[column]) if column < len(cells) else "none"
            if severity != SEVERITY_NONE and row_token.map is not None:
                self.table_severity[id(item)] = (severity, cells[column])
            if row_token.map is not None:
                self.lines_of[id(item)] = row_token.map[0] + 1
                self.claim(row_token, _ITEM_TEXT)

    def owned_lines(self) -> dict[int, list[int]]:
        owned: dict[int, list[int]] = {}
        for number, owner in enumerate(self.owner):
            if owner is not None and not isinstance(owner, _Mark):
                owned.setdefault(id(owner), []).append(number)
        return owned

    def render(self, numbers: list[int]) -> str:
        out: list[str] = []
        previous = None
        gap_blank = False
        for number in numbers:
            line = self.lines[number]
            # Lines taken out for items or commands leave a gap; a blank line keeps the
            # blocks on either side from running into each other.
            if previous is not None and number != previous + 1 and out and out[-1].strip():
                out.append("")
                gap_blank = True
            previous = number
            if gap_blank and not line.strip():
                continue
            gap_blank = False
            out.append(line)
        while out and not out[-1].strip():
            out.pop()
        while out and not out[0].strip():
            out.pop(0)
        return "\n".join(out)


class _GateReport:
    """The markers that made gates, and the lines a person said are no gates."""

    def __init__(self, builder: _TreeBuilder, not_gates: frozenset[int]) -> None:
        self.builder = builder
        self.not_gates = not_gates
        self.markers: list[GateMarker] = []

    def own(
        self, node: object, text: str, markers: _Markers, source: str
    ) -> tuple[str | None, GateMarker | None]:
        """The severity ``node`` declares itself (None: it inherits) and the marker that did."""
        line = self.builder.lines_of.get(id(node), 0)
        if markers.severity is not None:
            severity, marker = markers.severity, f"[severity: {markers.severity}]"
        elif id(node) in self.builder.table_severity:
            severity, marker = self.builder.table_severity[id(node)]
            source = "table"
        else:
            patterns = _HEADING_SEVERITY if source == "heading" else _ITEM_SEVERITY
            severity, marker = _severity_marker(text, patterns)
            if severity == SEVERITY_NONE:
                return None, None
        if severity == SEVERITY_NONE:
            return severity, None
        gate = GateMarker(line=line, marker=marker, severity=severity, source=source, text=text)
        self.markers.append(gate)
        if line in self.not_gates:
            gate.ignored = True
            return SEVERITY_NONE, None
        return severity, gate

    def section(
        self,
        section: ParsedSection,
        markers: _Markers,
        inherited: tuple[str, GateMarker | None],
        inherited_due: int | None,
    ) -> None:
        severity, gate = self.own(section, section.title, markers, "heading")
        own = inherited if severity is None else (severity, gate)
        section.severity = own[0]
        section.due_offset_minutes = _own_due(section.title, markers, inherited_due)
        for item in section.items:
            self.item(item, own, section.due_offset_minutes)
        for child in section.children:
            self.section(
                child, self.builder.section_markers[id(child)], own, section.due_offset_minutes
            )

    def item(
        self, item: ParsedItem, inherited: tuple[str, GateMarker | None], inherited_due: int | None
    ) -> None:
        markers = self.builder.item_markers.get(id(item), NO_MARKERS)
        severity, gate = self.own(item, item.text, markers, "item")
        # Sub-steps of a NO-GO step are part of that gate, like items under a heading.
        own = inherited if severity is None else (severity, gate)
        item.severity = own[0]
        if own[1] is not None:
            own[1].items += 1
        item.due_offset_minutes = _own_due(item.text, markers, inherited_due)
        for child in item.children:
            self.item(child, own, item.due_offset_minutes)


def _own_due(text: str, markers: _Markers, inherited: int | None) -> int | None:
    if markers.has_due:
        return markers.due
    found = due_offset_in_text(text)
    return inherited if found is None else found


def _unique_roles(lines: Iterable[str]) -> list[str]:
    roles: list[str] = []
    seen: set[str] = set()
    for line in lines:
        role = _role_from_line(line)
        if role and role.casefold() not in seen:
            seen.add(role.casefold())
            roles.append(role)
    return roles


def _signoff_section_ids(sections: Iterable[ParsedSection]) -> set[int]:
    ids: set[int] = set()
    for top in sections:
        for section in top.iter_sections():
            if id(section) not in ids and is_signoff_title(section.title):
                ids.update(id(s) for s in section.iter_sections())
    return ids


def _signoff_roles(builder: _TreeBuilder) -> list[str]:
    signoff_ids = _signoff_section_ids(raw.section for raw in builder.raw_sections)
    skipped = (_FENCE, _HEADING, _FRONT_MATTER)
    return _unique_roles(
        builder.lines[number]
        for raw in builder.raw_sections
        if id(raw.section) in signoff_ids
        for number in range(raw.start, raw.end)
        if not any(builder.owner[number] is mark for mark in skipped)
    )


def _item_lines(item: ParsedItem) -> Iterator[str]:
    yield item.text
    yield from item.details.split("\n")
    for child in item.children:
        yield from _item_lines(child)


def signoff_roles_in_sections(sections: list[ParsedSection]) -> list[str]:
    """The roles a tree's sign-off sections spell out, in the order an export writes them.

    The exporter uses this to know which roles still need a sign-off section of their own.
    """
    signoff_ids = _signoff_section_ids(sections)

    def lines() -> Iterator[str]:
        for top in sections:
            for section in top.iter_sections():
                if id(section) not in signoff_ids:
                    continue
                yield from section.notes.split("\n")
                for item in section.items:
                    yield from _item_lines(item)

    return _unique_roles(lines())


def _role_from_line(line: str) -> str | None:
    body = _LINE_PREFIX.sub("", line, count=1)
    match = _ROLE_LINE.match(body)
    if match is None:
        return None
    label = match.group("label").strip().strip("*_`").strip()
    if not label or not any(c.isalpha() for c in label) or _FIELD_LABEL_END.search(label):
        return None
    return label


def _front_matter_title(front_matter: str) -> str | None:
    for line in front_matter.splitlines():
        match = re.match(r"title:\s*(.*?)\s*$", line)
        if match is None:
            continue
        value = match.group(1)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                return str(json.loads(value))
            except ValueError:
                return value[1:-1]
        if len(value) >= 2 and value[0] == value[-1] == "'":
            return value[1:-1].replace("''", "'")
        return value or None
    return None


def _title_from_name(name: str | None) -> str | None:
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return re.sub(r"\.(?:md|markdown|txt)$", "", base, flags=re.I) or None


# A 1 MiB runbook is some 125,000 block tokens. Held all at once they survive into the oldest
# generation of the cyclic garbage collector, which then rescans them, and the whole web
# process's heap with them, several times: in a Django process that tripled the parse time.
# Parsing piece by piece, each piece's tokens walked and dropped before the next one is
# parsed, keeps the live token count small, so the collector has little to do.
_PIECE_LINES = 32
_ATX_MARKUP = re.compile(r"#{1,6}")


def _block_tokens(lines: list[str]) -> Iterator[list[Token]]:
    """markdown-it's block tokens for ``lines``, in pieces cut at top-level ATX headings, with
    ``token.map`` in line numbers of the whole text.

    A piece ends right before the last top-level ``#`` heading markdown-it found in it: every
    container is closed at such a heading, and no block rule looks further than one line
    ahead, so the tokens before it are exactly those a parse of the whole text gives. The
    next piece starts at that heading (never with front matter, which only the first piece
    may have). A piece with no such heading is parsed again twice as long, so a runbook
    without headings costs at most two parses of itself."""
    total = len(lines)
    start = 0
    size = _PIECE_LINES
    while start < total:
        end = min(total, start + size)
        tokens = _MARKDOWN.parse("\n".join(lines[start:end]))
        cut = len(tokens)
        if end < total:
            cut = next(
                (
                    index
                    for index in range(len(tokens) - 1, 0, -1)
                    if tokens[index].type == "heading_open"
                    and tokens[index].level == 0
                    and tokens[index].map is not None
                    and tokens[index].map[0] > 0
                    and _ATX_MARKUP.fullmatch(tokens[index].markup)
                ),
                0,
            )
            if cut == 0:
                size *= 2
                continue
        piece = tokens[:cut]
        for token in piece:
            if token.map is not None:
                token.map = [token.map[0] + start, token.map[1] + start]
        yield piece
        start = start + tokens[cut].map[0] if cut < len(tokens) else end
        size = _PIECE_LINES


def parse_runbook(
    text: str, name: str | None = None, *, not_gates: Iterable[int] = ()
) -> ParsedRunbook:
    """Parse Markdown ``text`` into a runbook tree; ``name`` (e.g. the file name) is the
    fallback title. ``not_gates``: 1-based line numbers whose severity markers a person said
    are no gates (from the preview's gate report). Raises RunbookImportError when the text
    cannot be a runbook."""
    _refuse_too_large(len(text.encode("utf-8", errors="surrogatepass")))
    _refuse_binary_text(text)
    if not text.strip():
        raise RunbookImportError("The runbook is empty.")
    return _parse(text, name, not_gates)


def _parse(text: str, name: str | None, not_gates: Iterable[int] = ()) -> ParsedRunbook:
    warnings: list[str] = []
    text = text.removeprefix("\ufeff")
    repaired = repair_mojibake(text)
    if repaired != text:
        warnings.append("Repaired characters that had been decoded with the wrong encoding.")
    source = repaired.replace("\r\n", "\n").replace("\r", "\n")

    lines = source.split("\n")
    builder = _TreeBuilder(lines)
    for piece in _block_tokens(lines):
        builder.build(piece)
    builder.finish()

    root = builder.root.section
    owned = builder.owned_lines()
    for raw in builder.raw_sections:
        raw.section.notes = builder.render(owned.get(id(raw.section), []))
    for item in builder.items:
        if id(item) in builder.table_items:
            continue
        details = builder.render(owned.get(id(item), []))
        item.details = textwrap.dedent(details).strip("\n")

    sections = list(builder.top_level)
    if root.notes.strip() or root.items or root.commands:
        sections.insert(0, root)
    report = _GateReport(builder, frozenset(not_gates))
    for section in sections:
        report.section(section, builder.section_markers[id(section)], (SEVERITY_NONE, None), None)

    if not builder.top_level and not builder.items:
        raise RunbookImportError(
            "Nothing to import: the text has no headings and no task-list lines (- [ ] …)."
        )

    roles = _signoff_roles(builder)
    for raw in builder.raw_sections:
        if is_signoff_title(raw.section.title) and not roles:
            warnings.append(
                f"Section “{raw.section.title}” looks like a sign-off but has no "
                "“Role: ____” lines; no sign-off roles were imported."
            )
            break
    if builder.hidden_task_lines:
        warnings.append(
            f"{builder.hidden_task_lines} task line(s) inside HTML blocks or comments were not "
            "imported, because GitHub does not render them as checkboxes either."
        )

    title = (
        _front_matter_title(builder.front_matter)
        or builder.first_h1_title
        or _title_from_name(name)
        or builder.first_heading_title
        or "Untitled runbook"
    )
    gates = sorted(report.markers, key=lambda g: g.line)
    return ParsedRunbook(
        title=title, sections=sections, signoff_roles=roles, warnings=warnings, gates=gates
    )
