"""The Markdown runbook importer/exporter, checked against our own fixtures, edge cases and,
as an extra layer when ../shared is beside the repository, real runbooks.

The shared runbooks live outside the repository (../shared/runbooks); they are read, never
copied, so the expectations below are computed from them or pinned after reading them. Tests
over them are marked ``shared_only`` and skipped (with the reason) on a clone alone.
"""

from __future__ import annotations

import copy
import re
import time
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
from tests.checklists.conftest import (
    COMMERCE,
    CORPUS,
    ELEARNING,
    PAYMENTS,
    RUNBOOKS,
    SHARED_PRESENT,
    runbook_with,
    shared_only,
    shared_param,
    truth_rows,
)

MOJIBAKE = RUNBOOKS / "mojibake-macroman.md"
MOJIBAKE_EXPECTED = RUNBOOKS / "mojibake-macroman.expected.md"

TRUTH = truth_rows()
SHARED_FILES = (
    [COMMERCE, ELEARNING, MOJIBAKE_EXPECTED, *sorted(CORPUS.glob("*.md"))] if SHARED_PRESENT else []
)
OWN_RUNBOOKS = [pytest.param(PAYMENTS, id=PAYMENTS.name)]
ALL_RUNBOOKS = OWN_RUNBOOKS + (
    [pytest.param(p, id=p.name[:24]) for p in SHARED_FILES]
    if SHARED_PRESENT
    else [shared_param(None, "shared-runbooks")]
)


def _naive_counts(text: str) -> tuple[int, int]:
    """Task-list lines and fenced blocks by a plain line scan, independent of the parser.

    Good enough for the two team runbooks, which have no HTML comments or nested fences. A
    task line that is a sign-off role ("Backend Engineer: ____ Date: ____") is a role, no item.
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
            tasks += not re.search(r"\[[ xX]\]\s+\**[^:]{1,80}?:\**\s*_{3,}", stripped)
    return tasks, fences


def _shape_item(item: ParsedItem) -> tuple:
    return (
        item.text,
        item.severity,
        item.pre_checked,
        item.due_offset_minutes,
        item.owner_role,
        item.evidence_required,
        item.group_label,
        [(c.language, c.code, c.label, c.inline) for c in item.commands],
        [_shape_item(child) for child in item.children],
    )


def _shape_section(section: ParsedSection) -> tuple:
    return (
        section.title,
        section.level,
        section.severity,
        section.due_offset_minutes,
        [(c.language, c.code, c.label, c.inline) for c in section.commands],
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


@shared_only
def test_commerce_runbook_has_roles_gates_and_every_task_and_fence() -> None:
    text = COMMERCE.read_text(encoding="utf-8")
    runbook = parse_runbook(text, COMMERCE.name)

    naive_tasks, naive_fences = _naive_counts(text)
    assert (runbook.item_count(), runbook.command_count()) == (naive_tasks, naive_fences)
    # 77 task lines, of which the four in "Sign-Off" are roles to sign, not items to tick.
    assert (runbook.item_count(), runbook.command_count()) == (73, 15)
    assert not any("____" in item.text for item in runbook.iter_items())
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
    # The bold label right above a task list frames its items, and left the notes.
    assert {i.group_label for i in gate.items} == {"Verification Steps"}
    assert "Verification Steps" not in gate.notes
    oauth = _section(runbook, "✅ GATE-004: OAuth Stubs (CONDITIONAL - OK for Staging)")
    assert [i.group_label for i in oauth.items] == ["For Production"] * 4 + [
        "For Staging (OK to deploy with stubs)"
    ] * 2
    # The bold labels go with the blocks they name, not into the notes.
    assert [c.label for c in gate.commands] == ["DHL Configuration", "FedEx Configuration"]
    assert "DHL Configuration" not in gate.notes
    assert all(item.severity == "no-go" for item in gate.items)
    assert _item(runbook, "OAuth test endpoints available at `/test/*`").pre_checked


@shared_only
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

    # "critical" in passing makes no gate: the runbook declares none.
    assert runbook.gate_counts() == {"no_go": 0, "conditional": 0, "warning": 0}
    assert flows.severity == "none" and runbook.gates == []

    rollback = _section(runbook, "Rollback Procedure")
    assert [c.language for c in rollback.commands] == ["bash"]
    assert "./scripts/deploy.sh stop" in rollback.commands[0].code
    # The block stays inside its numbered step, which is not left empty.
    assert (rollback.commands[0].label, rollback.commands[0].inline) == ("Execute Rollback", True)
    step = rollback.notes[rollback.notes.index("2. **Execute Rollback**") :]
    assert step.index("./scripts/deploy.sh stop") < step.index("3. **Post-Rollback**")
    assert "| Role | Name | Contact |" in _section(runbook, "Emergency Contacts").notes


# --- the corpus ---------------------------------------------------------------------------------


@pytest.mark.parametrize("row", TRUTH)
def test_corpus_matches_what_github_renders(row: dict[str, str]) -> None:
    runbook = parse_runbook((CORPUS / row["file"]).read_text(encoding="utf-8"), row["file"])

    assert runbook.item_count() == int(row["items_rendered"])
    assert runbook.checked_count() == int(row["checked"])
    assert runbook.command_count() == int(row["fenced_blocks"])
    headings = sum(1 for s in runbook.iter_sections() if s.level > 0)
    assert headings == int(row["headings"])


@shared_only
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
        "- [ ] Test critical user flows:\n"
        "  - [ ] Login\n"
        "- [ ] (NO-GO) tagged in parentheses\n"
        "- [ ] tagged in brackets [warning]\n"
        "- [ ] CONDITIONAL: leading tag\n"
        "- [ ] no go-live before Monday\n"
        "- [ ] 🛑 stop if red\n"
    )
    runbook = parse_runbook(text)
    severities = {i.text: i.severity for i in runbook.iter_items()}
    # Only explicit markers make gates: a heading's severity word, an item's tag or emoji. A
    # word in passing ("a warning here", "a critical fix", "critical user flows") is no gate.
    assert severities == {
        "inherits no-go": "no-go",
        "only a warning here: WARNING": "no-go",
        "sub-step of the warning": "no-go",
        "inherits warning from the emoji": "warning",
        "conditional step": "conditional",
        "a critical fix": "conditional",
        "fix compiler warnings": "none",
        "Test critical user flows:": "none",
        "Login": "none",
        "(NO-GO) tagged in parentheses": "no-go",
        "tagged in brackets [warning]": "warning",
        "CONDITIONAL: leading tag": "conditional",
        "no go-live before Monday": "none",
        "🛑 stop if red": "no-go",
    }
    assert runbook.gate_counts() == {"no_go": 5, "conditional": 3, "warning": 2}
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
    # "- [ ] **Product Owner:** ____" is a role to sign, not an item to tick.
    assert runbook.item_count() == 1


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


@shared_only
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


@pytest.mark.parametrize("path", ALL_RUNBOOKS)
def test_clean_text_is_never_changed(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert repair_mojibake(text) == text


def test_clean_typography_survives_repair() -> None:
    text = "“Curly” ‘quotes’ — ﬁne ＡＢＣ café naïve Ωmega √2 ≈ 3 ‚low‘ ¬ x 𝔘 e\u0301\n"
    assert repair_mojibake(text) == text


# --- export -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_RUNBOOKS)
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


@shared_only
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


# --- large runbooks: parsed piece by piece, the garbage collector left alone --------------------


def test_a_big_parse_leaves_the_garbage_collector_on() -> None:
    """Another thread of a web process keeps its cyclic garbage collection during a parse."""
    import gc
    import threading

    text = runbook_with(10_000, sections=500)
    collections = []

    def record(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(info["generation"])

    seen_disabled = []
    parser = threading.Thread(target=parse_runbook, args=(text,))
    gc.callbacks.append(record)
    try:
        parser.start()
        while parser.is_alive():
            if not gc.isenabled():
                seen_disabled.append(True)
            time.sleep(0.0005)
        parser.join()
    finally:
        gc.callbacks.remove(record)
    assert not seen_disabled, "the collector was switched off for the whole process"
    assert len(collections) > 5, "the collector did not run during a 10,000-item parse"


def test_pieces_cut_only_where_github_sees_a_heading() -> None:
    """'# …' lines inside fences, HTML blocks and list items never start a new section, however
    the text falls into the pieces it is parsed in."""
    blocks = []
    for n in range(60):
        blocks.append(
            f"## Part {n}\n\n- [ ] step {n}\n  ```sh\n  # not a heading {n}\n"
            + "  echo\n" * (n % 7)
            + "  ```\n"
            f"<!--\n# hidden heading {n}\n- [ ] hidden task\n-->\n\n"
            f"```\n# fenced heading {n}\n```\n\n"
            f"> quoted\n# real heading {n}\n\n- [ ] after {n}\n  - [ ] sub {n}\n"
        )
    runbook = parse_runbook("# Big\n\n" + "\n".join(blocks))
    assert runbook.section_count() == 1 + 60 * 2
    assert runbook.item_count() == 60 * 3
    assert runbook.command_count() == 60 * 2
    titles = [s.title for s in runbook.iter_sections()]
    assert not any("not a heading" in t or "hidden" in t or "fenced" in t for t in titles)
    assert titles[-1] == "real heading 59"
    assert _item(runbook, "step 59").commands[0].code.startswith("# not a heading 59")


def test_a_runbook_without_headings_parses_whole() -> None:
    text = "\n".join(f"- [ ] step {n}" for n in range(2_000))
    runbook = parse_runbook(text)
    assert runbook.item_count() == 2_000
    assert [i.text for i in runbook.iter_items()][-1] == "step 1999"


# --- our own fixture: every importer feature, on a clone alone ---------------------------------


def test_own_fixture_has_every_feature() -> None:
    runbook = parse_runbook(PAYMENTS.read_text(encoding="utf-8"), PAYMENTS.name)
    assert runbook.title == "Payments Service Release Runbook"
    # 24 task lines plus three table rows; the three sign-off task lines are roles.
    assert (runbook.item_count(), runbook.command_count()) == (27, 5)
    assert (runbook.section_count(), runbook.checked_count()) == (11, 2)
    assert runbook.signoff_roles == ["Payments Engineer", "Site Reliability", "Compliance Officer"]
    assert not any("____" in item.text for item in runbook.iter_items())
    assert runbook.gate_counts() == {"no_go": 4, "conditional": 4, "warning": 4}

    # Nested task lines are sub-items, three deep; phases give due offsets.
    rota = _item(runbook, "Confirm the on-call rota")
    assert [c.text for c in rota.children] == ["Primary engineer named", "Secondary engineer named"]
    assert rota.children[1].pre_checked
    assert [c.text for c in rota.children[1].children] == ["Pager test sent to both"]
    assert rota.children[1].children[0].due_offset_minutes == -1440

    # Fenced blocks: with their labels, in their item, and inside their numbered step.
    ledger = _section(runbook, "Ledger Migration (NO-GO)")
    assert [(c.label, c.language) for c in ledger.commands] == [("Dry run", "sql")]
    assert "Dry run" not in ledger.notes
    keys = _section(runbook, "Card Network Keys (CONDITIONAL - only for live traffic)")
    assert [c.label for c in keys.commands] == ["For Live", "For Sandbox"]
    assert "sandbox" in keys.commands[1].code and "For Live" not in keys.notes
    deploy = _item(runbook, "Deploy the API")
    assert deploy.commands == [Command("bash", './deploy.sh api --tag "$RELEASE_TAG"')]
    rollback = _section(runbook, "Roll Back")
    assert [(c.label, c.inline) for c in rollback.commands] == [("Execute Rollback", True)]
    step = rollback.notes[rollback.notes.index("2. **Execute Rollback**") :]
    assert step.index("./deploy.sh rollback") < step.index("3. **Tell people**")

    # Gates only from explicit markers; "critical" in passing is none.
    flows = _item(runbook, "Verify the critical payment paths:")
    assert {i.severity for i in flows.iter_items()} == {"none"}
    assert _item(runbook, "(NO-GO) Database migration applied").severity == "no-go"
    assert _item(runbook, "WARNING: cache warm-up may take ten minutes").severity == "warning"

    # A table with a Severity column lists gates; other tables stay notes.
    table = _section(runbook, "Gate Table")
    assert [(i.text, i.severity, i.details) for i in table.items] == [
        ("Settlement files reconcile", "no-go", "Owner: Finance"),
        ("Fraud model loaded", "warning", "Owner: Risk"),
        ("Partner webhooks green", "conditional", "Owner: Integrations"),
    ]
    assert "| Payments lead | Ada |" in _section(runbook, "Contacts").notes

    # A label right above a task list frames its items (and leaves the notes).
    after = _section(runbook, "After the Release")
    assert [(i.group_label, i.text) for i in after.items] == [
        ("For Live", "Settlement report shows the new fee lines"),
        ("For Live", "No card declines above the usual rate"),
        ("For Sandbox", "Test merchants can still sign up"),
    ]
    assert after.notes == ""


def test_the_gate_report_names_the_line_and_marker_of_every_gate() -> None:
    text = PAYMENTS.read_text(encoding="utf-8")
    lines = text.split("\n")
    runbook = parse_runbook(text)
    report = [(g.line, g.marker, g.severity, g.source, g.items) for g in runbook.gates]
    assert report == [
        (14, "NO-GO", "no-go", "heading", 2),
        (26, "CONDITIONAL", "conditional", "heading", 2),
        (41, "WARNING", "warning", "heading", 2),
        (49, "(NO-GO)", "no-go", "item", 1),
        (50, "WARNING:", "warning", "item", 1),
        (51, "CONDITIONAL:", "conditional", "item", 1),
        (65, "NO-GO", "no-go", "table", 1),
        (66, "WARNING", "warning", "table", 1),
        (67, "CONDITIONAL", "conditional", "table", 1),
    ]
    for gate in runbook.gates:
        assert gate.marker in lines[gate.line - 1]
    # Lines a person marks as no gate are imported as plain steps.
    corrected = parse_runbook(text, not_gates=[14, 50])
    assert {i.severity for i in _section(corrected, "Ledger Migration (NO-GO)").items} == {"none"}
    assert _item(corrected, "WARNING: cache warm-up may take ten minutes").severity == "none"
    assert corrected.gate_counts() == {"no_go": 2, "conditional": 4, "warning": 3}
    assert [(g.line, g.ignored) for g in corrected.gates if g.line in (14, 26, 50)] == [
        (14, True),
        (26, False),
        (50, True),
    ]


CLEAN_RELEASE = "# Release ✅ guide 🚀\n\n## ⏳ Waiting — “soon”\n\n- [ ] Café ready ✅\n"


def test_our_own_mac_roman_mojibake_is_repaired() -> None:
    broken = CLEAN_RELEASE.encode("utf-8").decode("mac_roman")
    assert "‚úÖ" in broken and "üöÄ" in broken  # what a wrong decode leaves behind
    assert repair_mojibake(broken) == CLEAN_RELEASE
    assert repair_mojibake(CLEAN_RELEASE) == CLEAN_RELEASE
    runbook = parse_runbook(broken)
    assert runbook.title == "Release ✅ guide 🚀"
    assert [i.text for i in runbook.iter_items()] == ["Café ready ✅"]
    assert any("Repaired" in w for w in runbook.warnings)


def test_a_generated_runbook_with_10000_items() -> None:
    runbook = parse_runbook(runbook_with(10_000, sections=40))
    assert runbook.item_count() == 10_000
    assert runbook.section_count() == 41
    assert [i.text for i in runbook.iter_items()][::2500] == [
        "Step 1",
        "Step 2501",
        "Step 5001",
        "Step 7501",
    ]
    again = parse_runbook(export_runbook(runbook))
    assert _shape(again) == _shape(runbook)


def test_a_label_frames_a_task_list_only() -> None:
    runbook = parse_runbook(
        "# R\n\n**Metrics:**\n- plain bullet\n- [ ] task after bullets\n\n"
        "**Go:**\n- [ ] framed\n\nJust prose:\n\n- [ ] after a blank line\n"
    )
    section = runbook.sections[0]
    assert [(i.text, i.group_label) for i in section.items] == [
        ("task after bullets", ""),
        ("framed", "Go"),
        ("after a blank line", ""),
    ]
    assert "**Metrics:**\n- plain bullet" in section.notes
    assert "Just prose:" in section.notes and "**Go:**" not in section.notes
