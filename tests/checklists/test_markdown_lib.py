"""The Markdown runbook importer/exporter, checked against real runbooks and edge cases.

The shared runbooks live outside the repository (../shared/runbooks); they are read, never
copied, so the expectations below are computed from them or pinned after reading them.
"""

from __future__ import annotations

import copy
import csv
import re
from pathlib import Path

import pytest

from checklists.lib.markdown_export import export_runbook
from checklists.lib.markdown_import import (
    MAX_RUNBOOK_BYTES,
    Command,
    ParsedItem,
    ParsedRunbook,
    ParsedSection,
    RunbookImportError,
    decode_upload,
    parse_runbook,
)
from checklists.lib.mojibake import repair_mojibake

RUNBOOKS = Path(__file__).resolve().parents[2] / ".." / "shared" / "runbooks"
CORPUS = RUNBOOKS / "corpus"
COMMERCE = RUNBOOKS / "commerce-production-gates.md"
ELEARNING = RUNBOOKS / "elearning-production-checklist.md"
MOJIBAKE = RUNBOOKS / "mojibake-macroman.md"
MOJIBAKE_EXPECTED = RUNBOOKS / "mojibake-macroman.expected.md"


def _truth_rows() -> list[dict[str, str]]:
    with (CORPUS / "TRUTH.tsv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


TRUTH = _truth_rows()
CORPUS_FILES = sorted(CORPUS.glob("*.md"))
ALL_RUNBOOKS = [COMMERCE, ELEARNING, MOJIBAKE_EXPECTED, *(CORPUS / r["file"] for r in TRUTH)]


def _naive_counts(text: str) -> tuple[int, int]:
    """Task-list lines and fenced blocks by a plain line scan, independent of the parser.

    Good enough for the two team runbooks, which have no HTML comments or nested fences.
    """
    tasks = fences = 0
    fence: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence = None
            continue
        opener = re.match(r"(`{3,}|~{3,})", stripped)
        if opener:
            fence = opener.group(1)
            fences += 1
        elif re.match(r"(?:[-*+]|\d+[.)])\s+\[[ xX]\]\s+\S", stripped):
            tasks += 1
    return tasks, fences


def _shape_item(item: ParsedItem) -> tuple:
    return (
        item.text,
        item.severity,
        item.pre_checked,
        item.due_offset_minutes,
        item.owner_role,
        item.evidence_required,
        [(c.language, c.code) for c in item.commands],
        [_shape_item(child) for child in item.children],
    )


def _shape_section(section: ParsedSection) -> tuple:
    return (
        section.title,
        section.level,
        section.severity,
        section.due_offset_minutes,
        [(c.language, c.code) for c in section.commands],
        [_shape_item(item) for item in section.items],
        [_shape_section(child) for child in section.children],
    )


def _shape(runbook: ParsedRunbook) -> tuple:
    return (runbook.title, runbook.signoff_roles, [_shape_section(s) for s in runbook.sections])


def _section(runbook: ParsedRunbook, title: str) -> ParsedSection:
    return next(s for s in runbook.iter_sections() if s.title == title)


def _item(runbook: ParsedRunbook, text: str) -> ParsedItem:
    return next(i for i in runbook.iter_items() if i.text == text)


# --- the team runbooks ------------------------------------------------------------------------


def test_commerce_runbook_has_roles_gates_and_every_task_and_fence() -> None:
    text = COMMERCE.read_text(encoding="utf-8")
    runbook = parse_runbook(text, COMMERCE.name)

    naive_tasks, naive_fences = _naive_counts(text)
    assert (runbook.item_count(), runbook.command_count()) == (naive_tasks, naive_fences)
    assert (runbook.item_count(), runbook.command_count()) == (77, 15)
    assert runbook.checked_count() == 7
    assert runbook.title == "Production Deployment Checklist"
    assert runbook.signoff_roles == [
        "Backend Engineer",
        "DevOps Engineer",
        "Security Review",
        "Technical Lead",
    ]
    assert runbook.gate_counts() == {"no_go": 10, "conditional": 14, "warning": 11}

    gate = _section(runbook, "✅ GATE-002: Carrier API Configuration (CRITICAL - NO-GO)")
    assert gate.severity == "no-go"
    assert [c.language for c in gate.commands] == ["bash", "bash"]
    assert "DHL_API_URL=https://express.api.dhl.com" in gate.commands[0].code
    assert "**Verification Steps:**" in gate.notes
    assert all(item.severity == "no-go" for item in gate.items)
    assert _item(runbook, "OAuth test endpoints available at `/test/*`").pre_checked


def test_elearning_nested_tasks_are_sub_items_with_phase_offsets() -> None:
    text = ELEARNING.read_text(encoding="utf-8")
    runbook = parse_runbook(text)

    naive_tasks, naive_fences = _naive_counts(text)
    assert (runbook.item_count(), runbook.command_count()) == (naive_tasks, naive_fences)
    assert (runbook.item_count(), runbook.command_count()) == (102, 2)

    flows = _item(runbook, "Test critical user flows:")
    assert [c.text for c in flows.children] == [
        "Login/Register",
        "View courses",
        "Play video content",
        "Take quiz",
        "Make purchase (if applicable)",
    ]
    post = _section(runbook, "3. Post-Deployment (T+15 minutes)")
    assert flows in post.items
    assert {i.due_offset_minutes for i in post.iter_items()} == {15}
    assert _section(runbook, "1. Pre-Deployment (T-2 hours)").items[0].due_offset_minutes == -120
    assert _section(runbook, "2. Deployment (T-0)").items[0].due_offset_minutes == 0
    assert _section(runbook, "4. Post-Deployment (T+1 hour)").items[0].due_offset_minutes == 60

    rollback = _section(runbook, "Rollback Procedure")
    assert [c.language for c in rollback.commands] == ["bash"]
    assert "./scripts/deploy.sh stop" in rollback.commands[0].code
    assert "| Role | Name | Contact |" in _section(runbook, "Emergency Contacts").notes


# --- the corpus ---------------------------------------------------------------------------------


@pytest.mark.parametrize("row", TRUTH, ids=[r["file"][:2] for r in TRUTH])
def test_corpus_matches_what_github_renders(row: dict[str, str]) -> None:
    runbook = parse_runbook((CORPUS / row["file"]).read_text(encoding="utf-8"), row["file"])

    assert runbook.item_count() == int(row["items_rendered"])
    assert runbook.checked_count() == int(row["checked"])
    assert runbook.command_count() == int(row["fenced_blocks"])
    headings = sum(1 for s in runbook.iter_sections() if s.level > 0)
    assert headings == int(row["headings"])


def test_corpus_traps_follow_github() -> None:
    opensearch = parse_runbook(
        (CORPUS / "05-opensearch-project-opensearch-build-release-template.md").read_text(
            encoding="utf-8"
        )
    )
    # "- - [ ] OS": a list inside a list item on one line is still a checkbox.
    assert [c.text for c in _item(opensearch, "Promote Repos.").children] == ["OS", "OSD"]
    # The title comes from the YAML front matter, which is neither a section nor an item.
    assert opensearch.title == "[RELEASE] Release version {{ env.VERSION }}"
    assert "labels:" not in "".join(s.notes for s in opensearch.iter_sections())
    assert _section(opensearch, "This Release Issue").level == 2  # inside <details>

    hls = parse_runbook(
        (CORPUS / "23-haskell-haskell-language-server-releasing.md").read_text(encoding="utf-8")
    )
    bump = _item(hls, "bump package versions in all `*.cabal` files (same version as hls)")
    # The fence opens on a plain bullet's marker line inside the task: it is that task's command.
    assert bump.commands == [
        Command("sh", "./release/update_versions.sh <OLD_VERSION> <NEW_VERSION>")
    ]
    assert "HLS uses lockstep versioning" in bump.details

    kep = parse_runbook(
        (CORPUS / "18-kubernetes-enhancements-kep-1797-fqdn-hostname.md").read_text(
            encoding="utf-8"
        )
    )
    assert not any(i.text.startswith("**Pick a hosting SIG") for i in kep.iter_items())
    assert any("HTML" in w for w in kep.warnings)


# --- structure rules on small documents --------------------------------------------------------


def test_list_markers_nesting_tabs_and_checked_boxes() -> None:
    text = (
        "# Deploy\n\n"
        "- [ ] dash\n"
        "* [X] star\n"
        "+ [x] plus\n\n"
        "1. [ ] first\n"
        "2. [ ] second\n"
        "\t- [ ] tab child\n"
        "\t\t- [ ] tab grandchild\n\n"
        "- plain bullet\n"
        "  - [ ] task under a plain bullet\n"
        "- [ ]no space is not a task\n"
        "- [ ] \n"
    )
    runbook = parse_runbook(text)
    section = runbook.sections[0]
    assert [i.text for i in section.items] == [
        "dash",
        "star",
        "plus",
        "first",
        "second",
        "task under a plain bullet",
    ]
    assert [i.pre_checked for i in section.items[:3]] == [False, True, True]
    second = section.items[4]
    assert second.children[0].text == "tab child"
    assert second.children[0].children[0].text == "tab grandchild"
    assert "- plain bullet" in section.notes
    assert "[ ]no space is not a task" in section.notes


def test_commands_attach_to_the_item_before_them_or_to_the_section() -> None:
    text = (
        "# Release\n\n"
        "Intro.\n\n"
        "~~~sh\nmake check\n~~~\n\n"
        "- [ ] Build\n"
        "  ```bash\n  make build\n  ```\n"
        "- [ ] Tag\n\n"
        "```\ngit tag v1\n```\n\n"
        "## Verify\n\n"
        "```console\n$ curl /health\n```\n"
    )
    runbook = parse_runbook(text)
    release, verify = runbook.sections[0], runbook.sections[0].children[0]
    assert release.commands == [Command("sh", "make check")]
    assert release.items[0].commands == [Command("bash", "make build")]
    assert release.items[1].commands == [Command("", "git tag v1")]
    assert verify.commands == [Command("console", "$ curl /health")]
    assert runbook.command_count() == 4


def test_severity_words_and_inheritance() -> None:
    text = (
        "# Gates (NO GO)\n\n"
        "- [ ] inherits no-go\n"
        "- [ ] only a warning here: WARNING\n"
        "  - [ ] sub-step of the warning\n\n"
        "## Canary ⚠️\n\n"
        "- [ ] inherits warning from the emoji\n\n"
        "## Conditional rollout\n\n"
        "- [ ] conditional step\n"
        "- [ ] a critical fix\n\n"
        "# Other\n\n"
        "- [ ] fix compiler warnings\n"
        "- [ ] no go-live before Monday\n"
        "- [ ] 🛑 stop if red\n"
    )
    runbook = parse_runbook(text)
    severities = {i.text: i.severity for i in runbook.iter_items()}
    assert severities == {
        "inherits no-go": "no-go",
        "only a warning here: WARNING": "warning",
        "sub-step of the warning": "warning",
        "inherits warning from the emoji": "warning",
        "conditional step": "conditional",
        "a critical fix": "no-go",
        "fix compiler warnings": "none",
        "no go-live before Monday": "none",
        "🛑 stop if red": "no-go",
    }
    assert runbook.gate_counts() == {"no_go": 3, "conditional": 1, "warning": 3}
    assert _section(runbook, "Canary ⚠️").severity == "warning"


@pytest.mark.parametrize(
    ("heading", "minutes"),
    [
        ("Prepare (T-2 hours)", -120),
        ("Cut over T-0", 0),
        ("Verify (T+15 minutes)", 15),
        ("Watch T+1 hour", 60),
        ("Freeze T-30m", -30),
        ("Announce T-1 day", -1440),
        ("GATE-002 has no phase", None),
    ],
)
def test_time_phases_set_due_offsets(heading: str, minutes: int | None) -> None:
    runbook = parse_runbook(f"# Runbook\n\n## {heading}\n\n- [ ] step\n  - [ ] sub-step\n")
    assert [i.due_offset_minutes for i in runbook.iter_items()] == [minutes, minutes]


def test_signoff_roles_in_their_various_shapes() -> None:
    text = (
        "# Deploy\n\n- [ ] ship it\n\n"
        "## Approvals\n\n"
        "Backend Engineer: ____ Date: ____\n"
        "- DevOps Engineer: _____\n"
        "**Security Review**: ___\n"
        "- [ ] **Product Owner:** ________\n"
        "- backend engineer: ____ Date: ____\n"
        "**Deployment Date:** ________\n"
        "**Approved By:** ________\n"
        "Remember: sign before noon.\n"
    )
    runbook = parse_runbook(text)
    assert runbook.signoff_roles == [
        "Backend Engineer",
        "DevOps Engineer",
        "Security Review",
        "Product Owner",
    ]
    assert runbook.item_count() == 2


def test_role_lines_outside_a_signoff_section_are_not_roles() -> None:
    runbook = parse_runbook("# Contacts\n\nBackend Engineer: ____\n\n- [ ] call\n")
    assert runbook.signoff_roles == []


def test_hidden_tasks_details_front_matter_and_root_section() -> None:
    text = (
        "---\ntitle: Weekly release\nlabels: release\n---\n\n"
        "Read this first.\n\n"
        "- [ ] before any heading\n\n"
        "<!--\n- [ ] hidden in a comment\n```sh\nrm -rf /\n```\n-->\n\n"
        "# Steps\n\n"
        "<details><summary>More</summary>\n\n"
        "- [ ] inside details\n\n"
        "</details>\n"
    )
    runbook = parse_runbook(text)
    assert runbook.title == "Weekly release"
    root, steps = runbook.sections
    assert (root.title, root.level) == ("", 0)
    assert "Read this first." in root.notes
    assert "labels: release" not in root.notes
    assert "hidden in a comment" in root.notes
    assert [i.text for i in runbook.iter_items()] == ["before any heading", "inside details"]
    assert runbook.command_count() == 0
    assert steps.title == "Steps"
    assert any("not imported" in w for w in runbook.warnings)


def test_no_root_section_without_content_before_the_first_heading() -> None:
    runbook = parse_runbook("\n\n# Only\n\n- [ ] a\n")
    assert [s.title for s in runbook.sections] == ["Only"]


def test_html_is_kept_as_text_not_dropped() -> None:
    text = (
        "# Deploy <script>alert(1)</script>\n\n"
        "<script>alert('notes')</script>\n\n"
        "| a | b |\n|---|---|\n| <b>x</b> | y |\n\n"
        "- [ ] check <script>alert('item')</script>\n\n"
        "  <img src=x onerror=alert(2)>\n"
    )
    runbook = parse_runbook(text)
    section = runbook.sections[0]
    assert section.title == "Deploy <script>alert(1)</script>"
    assert "<script>alert('notes')</script>" in section.notes
    assert "| <b>x</b> | y |" in section.notes
    assert section.items[0].text == "check <script>alert('item')</script>"
    assert section.items[0].details == "<img src=x onerror=alert(2)>"


def test_multiline_item_text_is_joined_and_details_are_dedented() -> None:
    runbook = parse_runbook(
        "# R\n\n- [ ] first line\n  continues here\n\n  Second paragraph\n  > quoted\n"
    )
    item = runbook.sections[0].items[0]
    assert item.text == "first line continues here"
    assert item.details == "Second paragraph\n> quoted"


def test_windows_line_endings_and_bom_are_accepted() -> None:
    runbook = parse_runbook(
        "\ufeff# Deploy\r\n\r\n- [ ] one\r\n  - [x] two\r\n```sh\r\nmake\r\n```\r\n"
    )
    assert runbook.title == "Deploy"
    assert [(i.text, i.pre_checked) for i in runbook.iter_items()] == [
        ("one", False),
        ("two", True),
    ]
    assert runbook.sections[0].items[0].commands == [Command("sh", "make")]


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "   \n\n", "Just some prose.\n\nAnd more prose, with a - list\n- item\n", "```\nx\n```\n"],
    ids=["empty", "blank", "prose", "only-code"],
)
def test_nothing_importable_is_refused(text: str) -> None:
    with pytest.raises(RunbookImportError):
        parse_runbook(text)


def test_too_large_text_is_refused() -> None:
    line = "- [ ] é step\n"
    text = "# Big\n\n" + line * (MAX_RUNBOOK_BYTES // len(line.encode()) + 1)
    assert len(text) <= MAX_RUNBOOK_BYTES < len(text.encode())
    with pytest.raises(RunbookImportError, match="limit"):
        parse_runbook(text)
    with pytest.raises(RunbookImportError, match="limit"):
        decode_upload(text.encode())


@pytest.mark.parametrize(
    "data",
    [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"# T\n" + bytes(range(1, 9)) * 20],
    ids=["nul", "controls"],
)
def test_binary_is_refused(data: bytes) -> None:
    with pytest.raises(RunbookImportError, match="binary"):
        decode_upload(data)
    with pytest.raises(RunbookImportError, match="binary"):
        parse_runbook(data.decode("latin-1"))


def test_decode_upload_handles_bom_cp1252_and_utf16() -> None:
    assert decode_upload("\ufeff# Déploiement ✅\n".encode()) == "# Déploiement ✅\n"
    assert decode_upload("# Café “quoted”\n".encode("cp1252")) == "# Café “quoted”\n"
    assert decode_upload("# Schritt ✅\n".encode("utf-16")) == "# Schritt ✅\n"
    with pytest.raises(RunbookImportError):
        decode_upload(b"# Title \x81\x8d\x8f broken")


# --- mojibake -------------------------------------------------------------------------------------


def test_mac_roman_mojibake_is_repaired_exactly() -> None:
    broken = MOJIBAKE.read_text(encoding="utf-8")
    expected = MOJIBAKE_EXPECTED.read_text(encoding="utf-8")
    assert repair_mojibake(broken) == expected
    runbook = parse_runbook(broken)
    assert runbook.title == "Release Guide 🚀"
    assert [s.title for s in runbook.iter_sections()][1:] == ["✅ Done", "⏳ Waiting"]
    assert runbook.warnings


def test_cp1252_mojibake_is_repaired() -> None:
    assert repair_mojibake("- [x] Smoke tests âœ… and ðŸš€ launch") == (
        "- [x] Smoke tests ✅ and 🚀 launch"
    )


@pytest.mark.parametrize("path", [*CORPUS_FILES, COMMERCE, ELEARNING, MOJIBAKE_EXPECTED], ids=str)
def test_clean_text_is_never_changed(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert repair_mojibake(text) == text


def test_clean_typography_survives_repair() -> None:
    text = "“Curly” ‘quotes’ — ﬁne ＡＢＣ café naïve Ωmega √2 ≈ 3 ‚low‘ ¬ x 𝔘 e\u0301\n"
    assert repair_mojibake(text) == text


# --- export -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_RUNBOOKS, ids=lambda p: p.name[:24])
def test_export_round_trips(path: Path) -> None:
    original = parse_runbook(path.read_text(encoding="utf-8"), path.name)
    exported = export_runbook(original)
    again = parse_runbook(exported, path.name)

    assert _shape(again) == _shape(original)
    assert again.item_count() == original.item_count()
    assert again.command_count() == original.command_count()
    assert export_runbook(again) == exported


def test_export_of_an_edited_tree_keeps_severity_due_and_roles() -> None:
    """A tree built from database rows, where values no longer follow from the text."""
    runbook = ParsedRunbook(
        title="Quarterly release",
        sections=[
            ParsedSection(
                title="Cut-over (T-0)",
                level=2,
                severity="warning",
                due_offset_minutes=0,
                commands=[Command("bash", "echo ```inline``` fences\n\tindented with a tab\n")],
                items=[
                    ParsedItem(
                        text="plain step",
                        severity="no-go",
                        due_offset_minutes=-30,
                        owner_role="DevOps Engineer",
                        evidence_required=True,
                    ),
                    ParsedItem(text="CRITICAL but downgraded", severity="none"),
                    ParsedItem(
                        text="Ticket #",
                        details="Some *details*\n\n    indented code",
                        pre_checked=True,
                        severity="warning",
                        due_offset_minutes=None,
                        commands=[Command("", "")],
                        children=[
                            ParsedItem(
                                text="child", severity="conditional", owner_role="QA (mobile)"
                            )
                        ],
                    ),
                    ParsedItem(text="", severity="warning", due_offset_minutes=0),
                ],
                children=[
                    ParsedSection(title="Ticket #", level=2, severity="none", due_offset_minutes=90)
                ],
            )
        ],
        signoff_roles=["Release Manager", "QA Lead"],
    )
    exported = export_runbook(runbook)
    again = parse_runbook(exported)

    expected = copy.deepcopy(runbook)
    # An empty item cannot render as a checkbox; it comes back with placeholder text.
    expected.sections[0].items[3].text = "(empty item)"
    # The child heading is written one level deeper so that it stays a child.
    expected.sections[0].children[0].level = 3
    # The roles had no section of their own, so the export added one.
    assert again.sections[-1].title == "Sign-off"
    assert again.sections[-1].items == []
    again.sections.pop()
    assert _shape(again) == _shape(expected)
    assert "[severity: no-go]" in exported
    assert "[due: none]" in exported
    assert (
        "- [ ] plain step [severity: no-go] [due: T-30 minutes] [owner: DevOps Engineer] "
        "[evidence: required]"
    ) in exported
    assert exported.startswith('---\ntitle: "Quarterly release"\n---\n')
    assert export_runbook(runbook.to_dict()) == exported


def test_owner_and_evidence_markers_belong_to_items_only() -> None:
    runbook = parse_runbook(
        "# R\n\n## Deploy [owner: Ops]\n\n"
        "- [ ] Roll out [evidence: required] [owner: Release Captain]\n"
        "- [ ] Check [evidence: maybe]\n"
        "- [x] Ask [owner: ]\n"
    )
    deploy = _section(runbook, "Deploy [owner: Ops]")
    roll, check, ask = deploy.items
    assert (roll.text, roll.owner_role, roll.evidence_required) == (
        "Roll out",
        "Release Captain",
        True,
    )
    # Values the importer does not know stay part of the text, as the author wrote them.
    assert (check.text, check.evidence_required) == ("Check [evidence: maybe]", False)
    assert (ask.text, ask.owner_role) == ("Ask [owner: ]", "")


def test_export_writes_sign_off_section_only_when_needed() -> None:
    commerce = parse_runbook(COMMERCE.read_text(encoding="utf-8"))
    assert export_runbook(commerce).count("## Sign-Off") == 1
    assert "## Sign-off\n" not in export_runbook(commerce)

    bare = ParsedRunbook(
        title="R",
        sections=[ParsedSection(title="R", level=1, items=[ParsedItem(text="a")])],
        signoff_roles=["Security Review"],
    )
    exported = export_runbook(bare)
    assert "- Security Review: ________________ Date: ________" in exported
    assert parse_runbook(exported).signoff_roles == ["Security Review"]
