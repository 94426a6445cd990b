"""Markdown import through every entry point (command, API, upload page) and export back.

Our own fixture runbook (fixtures/payments-release.md) has its counts pinned by reading it. The
shared runbooks are read from ../shared/runbooks when that folder is beside the repository (an
extra layer, skipped with its reason on a clone alone), never copied; their item and command
counts are checked against a plain line scan of each file, independent of the importer.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from checklists import drafts
from checklists.models import ChecklistTemplate, Item, Section
from releasecenter.models import AuditEvent
from tests.checklists.conftest import (
    COMMERCE,
    CORPUS,
    ELEARNING,
    PAYMENTS,
    RUNBOOKS,
    shared_only,
    shared_param,
    truth_rows,
)

TEAM_RUNBOOKS = [
    pytest.param(PAYMENTS, id=PAYMENTS.name),
    shared_param(COMMERCE, COMMERCE.name),
    shared_param(ELEARNING, ELEARNING.name),
]

# Read off fixtures/payments-release.md by hand: 24 task lines (the three sign-off lines are
# roles, not items) and the three rows of its severity table; five fenced blocks.
PAYMENTS_COUNTS = {"items": 27, "commands": 5, "sections": 11, "checked": 2}
PAYMENTS_GATES = {"no_go": 4, "conditional": 4, "warning": 4}
PAYMENTS_ROLES = ["Payments Engineer", "Site Reliability", "Compliance Officer"]


def expected_counts(path) -> tuple[int, int]:  # noqa: ANN001
    """Items and commands a runbook must import with."""
    if path == PAYMENTS:
        return PAYMENTS_COUNTS["items"], PAYMENTS_COUNTS["commands"]
    return line_counts(path.read_text(encoding="utf-8"))


_SIGNOFF_LINE = re.compile(r"\[[ xX]\]\s+\**[^:\n]{1,80}?:\**\s*_{3,}")


def line_counts(text: str) -> tuple[int, int]:
    """Task-list lines and fenced blocks by a line scan (the two team runbooks have no HTML
    comments or nested fences, so this is exact for them). A task line that is a sign-off role
    ("Backend Engineer: ____ Date: ____") is a role, not an item."""
    tasks = fences = 0
    fence = None
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
            tasks += not _SIGNOFF_LINE.search(stripped)
    return tasks, fences


def run_import_command(path, *extra: str) -> dict:  # noqa: ANN001
    out = io.StringIO()
    call_command("import_runbook", str(path), "--project", "shop", "--json", *extra, stdout=out)
    return json.loads(out.getvalue())


@pytest.mark.parametrize("path", TEAM_RUNBOOKS)
def test_command_counts_every_task_line_and_fence(personas, path):
    tasks, fences = expected_counts(path)
    body = run_import_command(path)
    assert set(body) == {
        "template_id",
        "name",
        "sections",
        "items",
        "commands",
        "gates",
        "signoff_roles",
    }
    assert body["items"] == tasks
    assert body["commands"] == fences
    template = ChecklistTemplate.objects.get(pk=body["template_id"], project=personas.project)
    version = template.current_version
    # The counts are what was stored, not only what was parsed.
    assert Item.objects.filter(version=version).count() == tasks
    stored_commands = sum(
        len(c) for c in Item.objects.filter(version=version).values_list("commands", flat=True)
    )
    stored_commands += sum(
        len(c) for c in Section.objects.filter(version=version).values_list("commands", flat=True)
    )
    assert stored_commands == fences
    assert body["sections"] == Section.objects.filter(version=version).count()


@shared_only
def test_commerce_runbook_has_its_four_roles_and_all_three_severities(personas):
    body = run_import_command(COMMERCE)
    assert body["signoff_roles"] == [
        "Backend Engineer",
        "DevOps Engineer",
        "Security Review",
        "Technical Lead",
    ]
    assert body["gates"]["no_go"] > 0
    assert body["gates"]["conditional"] > 0
    assert body["gates"]["warning"] > 0
    template = ChecklistTemplate.objects.get(pk=body["template_id"])
    gate = Item.objects.get(
        version=template.current_version, text="All cross-tenant access tests pass"
    )
    assert gate.severity == "no-go"
    assert gate.section.title.startswith("✅ GATE-003")


@shared_only
def test_elearning_nested_task_lines_are_sub_items(personas):
    text = ELEARNING.read_text(encoding="utf-8")
    nested = [ln for ln in text.splitlines() if re.match(r"\s+[-*] \[[ xX]\]", ln)]
    assert nested, "the runbook has indented task lines"
    body = run_import_command(ELEARNING)
    version = ChecklistTemplate.objects.get(pk=body["template_id"]).current_version
    subs = Item.objects.filter(version=version, parent__isnull=False)
    assert subs.count() == len(nested)
    sub_texts = set(subs.values_list("text", flat=True))
    for line in nested:
        assert re.sub(r"^\s+[-*] \[[ xX]\]\s+", "", line).strip() in sub_texts
    # Phases in headings give due offsets: "(T-2 hours)".
    assert Item.objects.filter(version=version, due_offset_minutes=-120).exists()


def test_command_name_and_plain_output(personas):
    out = io.StringIO()
    call_command(
        "import_runbook", str(PAYMENTS), "--project", "shop", "--name", "Gates", stdout=out
    )
    assert "Imported 'Gates' as template" in out.getvalue()
    assert ChecklistTemplate.objects.filter(project=personas.project, name="Gates").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"Just some prose.\n\nNo headings, no tasks.\n", "Nothing to import"),
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4, "binary"),
        (b"# Big\n\n" + b"- [ ] step\n" * 110_000, "1 MiB"),
    ],
    ids=["nothing-importable", "empty", "binary", "too-big"],
)
def test_command_refuses_bad_input_with_exit_1(personas, tmp_path, content, message):
    path = tmp_path / "bad.md"
    path.write_bytes(content)
    before = ChecklistTemplate.objects.count()
    with pytest.raises(CommandError, match=message):
        call_command("import_runbook", str(path), "--project", "shop", stdout=io.StringIO())
    assert ChecklistTemplate.objects.count() == before


def run_manage(*args: str) -> subprocess.CompletedProcess:
    """``manage.py`` in a process of its own, on the test database, as a shell would run it."""
    from django.conf import settings

    from tests.conftest import ROOT

    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "releasecenter.settings_test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
    }
    return subprocess.run(  # noqa: S603 - our own interpreter and manage.py
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


# The command runs in another process, which sees only committed rows: the project must exist
# there for the exit code to come from the file rather than from an unknown project.
@pytest.mark.django_db(transaction=True)
def test_command_exit_code_is_1_for_a_file_with_nothing_to_import(personas, tmp_path):
    path = tmp_path / "nothing.md"
    path.write_text("no structure at all\n")
    result = run_manage("import_runbook", str(path), "--project", "shop", "--json")
    assert result.returncode == 1, result.stderr
    assert "Nothing to import" in result.stderr
    assert "No project" not in result.stderr
    assert result.stdout == ""
    assert not ChecklistTemplate.objects.exists()
    # The same process imports a real runbook into that project: the project was found.
    good = tmp_path / "good.md"
    good.write_text("# Tiny\n\n- [ ] One step\n")
    ok = run_manage("import_runbook", str(good), "--project", "shop", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["items"] == 1


def test_command_exit_code_is_1_for_an_unknown_project(db, tmp_path):
    path = tmp_path / "fine.md"
    path.write_text("# Fine\n\n- [ ] One step\n")
    result = run_manage("import_runbook", str(path), "--project", "nope", "--json")
    assert result.returncode == 1
    assert "No project with the slug 'nope'" in result.stderr


def test_export_command_round_trips(personas):
    from checklists import services

    body = run_import_command(PAYMENTS)
    first = ChecklistTemplate.objects.get(pk=body["template_id"])
    # Fields only the editor sets: an owner role, evidence required (also on a pre-checked and
    # on a sub-item), so the export has to carry them for the round trip to keep them.
    version = first.current_version
    top = Item.objects.filter(version=version, parent__isnull=True).order_by("position")
    sub = Item.objects.filter(version=version, parent__isnull=False).order_by("position").first()
    edits = [
        (top[0].text, {"owner_role": "Payments Engineer", "evidence_required": True}),
        (top[1].text, {"owner_role": "Site Reliability"}),
        (top[2].text, {"evidence_required": True, "pre_checked": True}),
    ]
    if sub is not None:
        edits.append((sub.text, {"owner_role": "Compliance Officer", "evidence_required": True}))
    for text, fields in edits:
        first.refresh_from_db()
        target = Item.objects.filter(version=first.current_version, text=text).first()
        services.update_item(personas.member, first, target.pk, **fields)
    first.refresh_from_db()
    out = io.StringIO()
    call_command("export_runbook", str(body["template_id"]), stdout=out)
    exported = out.getvalue()
    assert exported.startswith("# Payments Service Release Runbook")
    assert "[owner: Payments Engineer] [evidence: required]" in exported
    again = run_import_command_text(personas, exported, "Round trip")
    assert shape(first) == shape(again)
    assert again.current_version.signoff_roles == first.current_version.signoff_roles
    kept = Item.objects.filter(version=again.current_version)
    assert kept.filter(evidence_required=True).count() == len(
        [e for e in edits if e[1].get("evidence_required")]
    )
    assert set(kept.exclude(owner_role="").values_list("owner_role", flat=True)) >= {
        "Payments Engineer",
        "Site Reliability",
    }
    # The markers are taken off again: no item text ends with one.
    assert not kept.filter(text__contains="[owner:").exists()
    assert not kept.filter(text__contains="[evidence:").exists()


def run_import_command_text(personas, text: str, name: str):  # noqa: ANN001, ANN201
    from checklists import services

    return services.import_runbook(personas.member, personas.project, text, name=name).template


def shape(template: ChecklistTemplate) -> list:
    """Sections (title, depth) and items (text, severity, pre-checked, sub-items) and commands."""
    draft = drafts.load(template.current_version)

    def item(node):  # noqa: ANN001, ANN202
        return (
            node.text,
            node.severity,
            node.pre_checked,
            node.owner_role,
            node.evidence_required,
            [(c["language"], c["code"]) for c in node.commands],
            [item(c) for c in node.children],
        )

    def section(node):  # noqa: ANN001, ANN202
        return (
            node.title,
            [(c["language"], c["code"]) for c in node.commands],
            [item(i) for i in node.items],
            [section(c) for c in node.children],
        )

    return [section(s) for s in draft.sections]


def test_export_command_unknown_template_fails(db):
    with pytest.raises(CommandError, match="No checklist template 999"):
        call_command("export_runbook", "999", stdout=io.StringIO())


@shared_only
def test_mojibake_is_repaired_on_import(personas):
    body = run_import_command(RUNBOOKS / "mojibake-macroman.md")
    expected = run_import_command(RUNBOOKS / "mojibake-macroman.expected.md", "--name", "clean")
    first = ChecklistTemplate.objects.get(pk=body["template_id"])
    second = ChecklistTemplate.objects.get(pk=expected["template_id"])
    assert shape(first) == shape(second)
    assert "✅" in json.dumps(shape(first), ensure_ascii=False)


CLEAN = """# Go-live ✅

## Checks 🚀 (T-30 minutes)

- [ ] Smoke tests pass ✅
- [ ] Café menu ok — naïve
"""


def texts_of(template_id: int) -> list[str]:
    version = ChecklistTemplate.objects.get(pk=template_id).current_version
    sections = Section.objects.filter(version=version).order_by("position")
    items = Item.objects.filter(version=version).order_by("position")
    return [s.title for s in sections] + [i.text for i in items]


def test_windows_1252_mojibake_is_repaired_through_the_command(personas, tmp_path):
    broken = CLEAN.encode("utf-8").decode("cp1252")
    assert "âœ…" in broken and "ðŸš€" in broken  # the file as a wrong decode left it
    path = tmp_path / "broken.md"
    path.write_text(broken, encoding="utf-8")
    err = io.StringIO()
    out = io.StringIO()
    call_command("import_runbook", str(path), "--project", "shop", "--json", stdout=out, stderr=err)
    body = json.loads(out.getvalue())
    assert texts_of(body["template_id"]) == [
        "Go-live ✅",
        "Checks 🚀 (T-30 minutes)",
        "Smoke tests pass ✅",
        "Café menu ok — naïve",
    ]
    assert "Repaired characters" in err.getvalue()
    assert Item.objects.get(text="Smoke tests pass ✅").due_offset_minutes == -30


def test_windows_1252_mojibake_is_repaired_through_the_api(api_client_for, personas):
    broken = CLEAN.encode("utf-8").decode("cp1252")
    response = api_client_for(personas.member).post(
        IMPORT_URL, {"markdown": broken, "name": "Broken"}, format="json"
    )
    assert response.status_code == 201, response.content
    assert texts_of(response.json()["template_id"])[2:] == [
        "Smoke tests pass ✅",
        "Café menu ok — naïve",
    ]


# Characters a repair could mistake for mojibake: accents, curly and low quotes, symbols.
CLEAN_UNUSUAL = """# Läufe — “Prüfung” ✅

## Étape 2 (±5 %, 10 °C)

- [ ] Ångström naïve café, ½ cup, © 2024, Œuvre
- [ ] 日本語 🚀 ‚quoted‘ • bullet … ellipsis ™
- [ ] Preis: 5 € — “fertig”
"""


def test_clean_text_is_imported_unchanged(personas, tmp_path, api_client_for):
    path = tmp_path / "clean.md"
    path.write_text(CLEAN_UNUSUAL, encoding="utf-8")
    err = io.StringIO()
    out = io.StringIO()
    call_command("import_runbook", str(path), "--project", "shop", "--json", stdout=out, stderr=err)
    expected = [
        "Läufe — “Prüfung” ✅",
        "Étape 2 (±5 %, 10 °C)",
        "Ångström naïve café, ½ cup, © 2024, Œuvre",
        "日本語 🚀 ‚quoted‘ • bullet … ellipsis ™",
        "Preis: 5 € — “fertig”",
    ]
    assert texts_of(json.loads(out.getvalue())["template_id"]) == expected
    assert "Repaired" not in err.getvalue()
    response = api_client_for(personas.member).post(
        IMPORT_URL, {"markdown": CLEAN_UNUSUAL, "name": "Clean via API"}, format="json"
    )
    assert response.status_code == 201
    assert texts_of(response.json()["template_id"]) == expected


def test_import_is_audited(personas):
    body = run_import_command(PAYMENTS, "--user", "mia-member")
    event = AuditEvent.objects.get(verb="checklist_template.imported")
    assert event.actor == personas.member
    assert event.object_id == str(body["template_id"])
    assert event.after["items"] == body["items"]


def test_same_name_is_refused(personas):
    run_import_command(PAYMENTS)
    with pytest.raises(CommandError, match="exists in this project"):
        run_import_command(PAYMENTS)


# --- The API -----------------------------------------------------------------------------------

IMPORT_URL = "/api/v1/projects/shop/checklist-templates/import"


def test_api_imports_markdown_body_with_the_same_json(api_client_for, personas):
    text = PAYMENTS.read_text(encoding="utf-8")
    tasks, fences = expected_counts(PAYMENTS)
    client = api_client_for(personas.member)
    response = client.generic(
        "POST", IMPORT_URL + "?name=From+CI", text.encode(), content_type="text/markdown"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "From CI"
    assert (body["items"], body["commands"]) == (tasks, fences)
    via_command = run_import_command(PAYMENTS, "--name", "From command")
    for key in ("sections", "items", "commands", "gates", "signoff_roles"):
        assert body[key] == via_command[key]


def test_api_imports_json(api_client_for, personas):
    client = api_client_for(personas.lead)
    response = client.post(
        IMPORT_URL,
        {"markdown": "# R\n\n## Go (NO-GO)\n\n- [ ] One\n- [x] Two\n", "name": "Tiny"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json() == {
        "template_id": response.json()["template_id"],
        "name": "Tiny",
        "sections": 2,
        "items": 2,
        "commands": 0,
        "gates": {"no_go": 2, "conditional": 0, "warning": 0},
        "signoff_roles": [],
    }


@pytest.mark.parametrize(
    ("body", "content_type", "needle"),
    [
        ({"markdown": "plain words only"}, "json", "Nothing to import"),
        ({"name": "x"}, "json", "markdown"),
        (b"\x00\x01\x02binary", "application/octet-stream", ""),
        (b"# Huge\n" + b"- [ ] x\n" * 140_000, "text/markdown", "1 MiB"),
    ],
    ids=["nothing", "missing", "binary", "too-big"],
)
def test_api_bad_input_is_a_clear_400(api_client_for, personas, body, content_type, needle):
    client = api_client_for(personas.member)
    if content_type == "json":
        response = client.post(IMPORT_URL, body, format="json")
    else:
        response = client.generic("POST", IMPORT_URL, body, content_type=content_type)
    assert response.status_code in (400, 415), response.content
    if needle:
        assert response.status_code == 400
        assert needle in json.dumps(response.json())
    assert not ChecklistTemplate.objects.exists()


def test_api_binary_markdown_body_is_refused(api_client_for, personas):
    client = api_client_for(personas.member)
    response = client.generic(
        "POST", IMPORT_URL, b"\x89PNG\r\n\x1a\n\x00\x00IHDR", content_type="text/markdown"
    )
    assert response.status_code == 400
    assert "binary" in json.dumps(response.json())


def test_api_import_access(api_client_for, personas):
    markdown = {"markdown": "# R\n\n- [ ] One\n"}
    assert (
        api_client_for(personas.outsider).post(IMPORT_URL, markdown, format="json").status_code
        == 404
    )
    assert (
        api_client_for(personas.viewer).post(IMPORT_URL, markdown, format="json").status_code == 403
    )
    assert not ChecklistTemplate.objects.exists()
    other = "/api/v1/projects/elsewhere/checklist-templates/import"
    assert api_client_for(personas.member).post(other, markdown, format="json").status_code == 404


def test_api_lists_and_exports_templates(api_client_for, personas):
    body = run_import_command(PAYMENTS)
    client = api_client_for(personas.viewer)
    listed = client.get("/api/v1/projects/shop/checklist-templates/").json()
    assert [t["name"] for t in listed["results"]] == ["Payments Service Release Runbook"]
    detail = client.get(f"/api/v1/projects/shop/checklist-templates/{body['template_id']}/")
    assert detail.json()["items"] == body["items"]
    exported = client.get(f"/api/v1/projects/shop/checklist-templates/{body['template_id']}/export")
    assert exported["Content-Type"].startswith("text/markdown")
    assert "- [ ] Keys rotated within the last 90 days" in exported.content.decode()
    outsider = api_client_for(personas.outsider)
    assert (
        outsider.get(
            f"/api/v1/projects/shop/checklist-templates/{body['template_id']}/"
        ).status_code
        == 404
    )


# --- The upload page -------------------------------------------------------------------------


def test_upload_preview_then_save(client, personas):
    client.force_login(personas.member)
    with PAYMENTS.open("rb") as handle:
        preview = client.post(
            "/p/shop/checklists/import/", {"step": "preview", "file": handle, "name": ""}
        )
    assert preview.status_code == 200
    page = preview.content.decode()
    tasks, fences = expected_counts(PAYMENTS)
    assert f"<strong>{tasks}</strong> items" in page
    assert f"<strong>{fences}</strong> commands" in page
    assert "Card Network Keys (CONDITIONAL - only for live traffic)" in page
    assert not ChecklistTemplate.objects.exists(), "a preview saves nothing"
    markdown = preview.context["form"].initial["markdown"]
    saved = client.post(
        "/p/shop/checklists/import/",
        {"step": "save", "markdown": markdown, "name": "Commerce gates", "kind": "deployment-day"},
    )
    assert saved.status_code == 302
    template = ChecklistTemplate.objects.get(name="Commerce gates")
    assert template.kind == "deployment-day"
    assert Item.objects.filter(version=template.current_version).count() == tasks


@pytest.mark.parametrize("step", ["preview", "save"])
def test_upload_page_refuses_a_file_over_1_mib(client, personas, step):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(personas.member)
    big = b"# Big\n\n" + b"- [ ] step\n" * 100_000
    assert len(big) > 1_048_576
    response = client.post(
        "/p/shop/checklists/import/",
        {"step": step, "file": SimpleUploadedFile("big.md", big), "name": "Big"},
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "the limit is 1,048,576 bytes (1 MiB)" in page
    assert response.context["preview"] is None
    assert not ChecklistTemplate.objects.exists()
    assert not AuditEvent.objects.filter(verb="checklist_template.imported").exists()


@pytest.mark.parametrize("step", ["preview", "save"])
def test_upload_page_refuses_a_binary_file(client, personas, step):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(personas.member)
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
    response = client.post(
        "/p/shop/checklists/import/",
        {"step": step, "file": SimpleUploadedFile("diagram.md", png), "name": "Diagram"},
    )
    assert response.status_code == 200
    assert "looks like a binary file" in response.content.decode()
    assert response.context["preview"] is None
    assert not ChecklistTemplate.objects.exists()
    assert not AuditEvent.objects.filter(verb="checklist_template.imported").exists()


def test_paste_with_nothing_importable_shows_the_reason(client, personas):
    client.force_login(personas.member)
    response = client.post(
        "/p/shop/checklists/import/", {"step": "preview", "markdown": "only prose here"}
    )
    assert response.status_code == 200
    assert "Nothing to import" in response.content.decode()
    assert not ChecklistTemplate.objects.exists()


def test_upload_page_access(client, personas):
    client.force_login(personas.viewer)
    assert client.get("/p/shop/checklists/import/").status_code == 403
    client.force_login(personas.outsider)
    assert client.get("/p/shop/checklists/import/").status_code == 404


HOSTILE = """# Hostile <script>alert('title')</script>

Some notes with <img src=x onerror="alert('notes')"> and <b>bold</b>.

## Step <script>alert('section')</script>

- [ ] Click <script>alert('item')</script> then <a href="javascript:alert(1)">here</a>
- [ ] [a link](javascript:alert('md'))
  <iframe src="https://evil.example"></iframe>
"""


def test_html_in_runbooks_is_shown_escaped_never_run(client, personas):
    from checklists import services

    template = services.import_runbook(
        personas.member, personas.project, HOSTILE, name="Hostile"
    ).template
    run = services.create_run(personas.member, template)
    client.force_login(personas.member)
    preview = client.post("/p/shop/checklists/import/", {"step": "preview", "markdown": HOSTILE})
    assert "Step &lt;script&gt;" in preview.content.decode()
    assert "<script>alert" not in preview.content.decode()
    for url in (
        f"/p/shop/checklists/templates/{template.pk}/",
        f"/p/shop/checklists/runs/{run.pk}/",
    ):
        page = client.get(url).content.decode()
        assert "&lt;script&gt;alert(&#x27;item&#x27;)&lt;/script&gt;" in page or (
            "&lt;script&gt;alert('item')&lt;/script&gt;" in page
        ), url
        for raw in ("<script>alert", "<img", "<iframe", "<b>bold"):
            assert raw not in page, (url, raw)
        assert not re.search(r"<a [^>]*href=\"javascript", page, re.I), url
        assert not re.search(r"<[a-z]+ [^>]*onerror=", page, re.I), url


@pytest.mark.parametrize("row", truth_rows())
def test_every_corpus_checklist_is_stored_without_losing_a_checkbox(personas, row):
    """What GitHub shows for each of the 17 public checklists is what the template holds."""
    from checklists import services

    path = CORPUS / row["file"]
    outcome = services.import_runbook(personas.member, personas.project, path.read_bytes())
    assert outcome.summary["items"] == int(row["items_rendered"])
    assert outcome.summary["commands"] == int(row["fenced_blocks"])
    version = outcome.template.current_version
    assert Item.objects.filter(version=version).count() == int(row["items_rendered"])
    assert Item.objects.filter(version=version, pre_checked=True).count() == int(row["checked"])


def test_own_runbook_is_stored_with_its_roles_gates_labels_and_groups(personas):
    body = run_import_command(PAYMENTS)
    assert body["gates"] == PAYMENTS_GATES
    assert body["signoff_roles"] == PAYMENTS_ROLES
    assert body["sections"] == PAYMENTS_COUNTS["sections"]
    version = ChecklistTemplate.objects.get(pk=body["template_id"]).current_version
    assert version.signoff_roles == PAYMENTS_ROLES
    assert Item.objects.filter(version=version, pre_checked=True).count() == 2
    assert not Item.objects.filter(version=version, text__contains="____").exists()
    keys = Section.objects.get(version=version, title__startswith="Card Network Keys")
    assert [c["label"] for c in keys.commands] == ["For Live", "For Sandbox"]
    rollback = Section.objects.get(version=version, title="Roll Back")
    assert rollback.commands[0]["inline"] is True
    assert list(
        Item.objects.filter(version=version, section__title="After the Release")
        .order_by("position")
        .values_list("group_label", flat=True)
    ) == ["For Live", "For Live", "For Sandbox"]
    assert Item.objects.get(
        version=version, text="Verify the critical payment paths:"
    ).severity == ("none")
