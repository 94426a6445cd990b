"""The upload page beyond the first save: the gate report and its corrections, a name that is
taken (the upload is kept; save as the next version of that template, or under another name),
and counts written as people read them ("1 command"). Our own fixture runbook only."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from checklists import services
from checklists.models import ChecklistTemplate, Item, TemplateVersion
from releasecenter.models import AuditEvent
from tests.checklists.conftest import PAYMENTS

URL = "/p/shop/checklists/import/"


def upload(client, step: str = "preview", **fields):  # noqa: ANN001, ANN003, ANN201
    data = PAYMENTS.read_bytes()
    return client.post(
        URL, {"step": step, "file": SimpleUploadedFile(PAYMENTS.name, data), **fields}
    )


def test_preview_lists_the_lines_that_made_gates(client, personas):
    client.force_login(personas.member)
    page = upload(client).content.decode()
    assert "Where the gates come from" in page
    lines = PAYMENTS.read_text(encoding="utf-8").split("\n")
    for line, marker in ((14, "NO-GO"), (49, "(NO-GO)"), (50, "WARNING:"), (65, "NO-GO")):
        assert marker in lines[line - 1]
        assert f"<td>{line}</td><td><code>{marker}</code></td>" in page
    assert 'name="not_gates" value="14"' in page
    # "Verify the critical payment paths:" makes no gate, so it is nowhere in the report.
    start = page.index("Where the gates come from")
    report = page[start : page.index("</section>", start)]
    assert "critical payment paths" not in report


def test_a_person_can_correct_a_gate_before_saving(client, personas):
    client.force_login(personas.member)
    markdown = upload(client).context["form"].initial["markdown"]
    again = client.post(URL, {"step": "preview", "markdown": markdown, "not_gates": ["14", "50"]})
    counts = again.context["preview"]["counts"]["gates"]
    assert counts == {"no_go": 2, "conditional": 4, "warning": 3}
    assert 'value="14" aria-label="Line 14 is not a gate" checked' in again.content.decode()
    saved = client.post(
        URL,
        {"step": "save", "markdown": markdown, "name": "Corrected", "not_gates": ["14", "50"]},
    )
    assert saved.status_code == 302
    version = ChecklistTemplate.objects.get(name="Corrected").current_version
    ledger = Item.objects.filter(version=version, section__title="Ledger Migration (NO-GO)")
    assert set(ledger.values_list("severity", flat=True)) == {"none"}
    assert (
        Item.objects.get(version=version, text__startswith="(NO-GO) Database").severity == "no-go"
    )
    response = client.post(URL, {"step": "preview", "markdown": markdown, "not_gates": ["x"]})
    assert "is not a line number" in response.content.decode()


def test_a_taken_name_keeps_the_upload_and_offers_a_new_version(client, personas):
    client.force_login(personas.member)
    first = services.import_runbook(personas.member, personas.project, PAYMENTS.read_bytes())
    template = first.template
    run = services.create_run(personas.member, template)
    before = template.current_version

    response = upload(client, step="save", name=template.name)
    assert response.status_code == 200
    page = response.content.decode()
    assert f"“{template.name}” exists already" in page
    assert page.index("exists already") < page.index("Where the gates come from")
    assert f"Save as version 2 of “{template.name}”" in page
    # The upload is still there: the preview and the text to save with.
    assert response.context["preview"]["counts"]["items"] == 27
    markdown = response.context["form"].initial["markdown"]
    assert markdown.startswith("# Payments Service Release Runbook")
    assert response.context["conflict"] == template
    assert ChecklistTemplate.objects.filter(project=personas.project).count() == 1

    updated = markdown.replace("- [ ] Freeze the release branch", "- [ ] Freeze the branch today")
    saved = client.post(
        URL,
        {
            "step": "save-version",
            "template": template.pk,
            "markdown": updated,
            "filename": PAYMENTS.name,
        },
    )
    assert saved.status_code == 302
    assert saved["Location"] == f"/p/shop/checklists/templates/{template.pk}/"
    template.refresh_from_db()
    version = template.current_version
    assert (version.number, version.source) == (2, TemplateVersion.Source.IMPORT)
    assert version.summary == f"Imported from {PAYMENTS.name}"
    assert Item.objects.filter(version=version, text="Freeze the branch today").exists()
    assert Item.objects.filter(version=version).count() == 27
    # The run already started keeps the version it was started from.
    run.refresh_from_db()
    assert run.template_version == before
    event = AuditEvent.objects.filter(verb="checklist_template.imported").latest("pk")
    assert event.after["version"] == 2 and event.actor == personas.member
    assert ChecklistTemplate.objects.filter(project=personas.project).count() == 1


def test_a_taken_name_can_be_saved_under_another_name(client, personas):
    client.force_login(personas.member)
    template = services.import_runbook(
        personas.member, personas.project, PAYMENTS.read_bytes()
    ).template
    conflict = upload(client, step="save", name=template.name)
    markdown = conflict.context["form"].initial["markdown"]
    saved = client.post(URL, {"step": "save", "markdown": markdown, "name": "Payments v2"})
    assert saved.status_code == 302
    assert set(ChecklistTemplate.objects.values_list("name", flat=True)) == {
        template.name,
        "Payments v2",
    }
    template.refresh_from_db()
    assert template.current_version.number == 1


def test_a_new_version_only_of_this_projects_templates(client, personas):
    other = services.import_runbook(
        personas.member, personas.other_project, "# Theirs\n\n- [ ] a\n"
    ).template
    client.force_login(personas.member)
    response = client.post(
        URL, {"step": "save-version", "template": other.pk, "markdown": "# Mine\n\n- [ ] b\n"}
    )
    assert response.status_code == 404
    other.refresh_from_db()
    assert other.current_version.number == 1


TINY = "# Tiny\n\n- [ ] One step\n\n```sh\nmake\n```\n"


def test_counts_are_written_in_the_singular_for_one(client, personas):
    client.force_login(personas.member)
    preview = client.post(URL, {"step": "preview", "markdown": TINY}).content.decode()
    assert "<strong>1</strong> section ·" in preview
    assert "<strong>1</strong> item ·" in preview
    assert "<strong>1</strong> command ·" in preview
    saved = client.post(URL, {"step": "save", "markdown": TINY, "name": "Tiny"}, follow=True)
    page = saved.content.decode()
    assert "Imported Tiny: 1 section, 1 item, 1 command." in page
    assert "1 section · 1 item · 0 gates · 1 command" in page
    out = io.StringIO()
    path = PAYMENTS.parent / "tiny.md"
    try:
        path.write_text(TINY, encoding="utf-8")
        call_command("import_runbook", str(path), "--project", "shop", "--name", "T2", stdout=out)
    finally:
        path.unlink()
    assert "1 section, 1 item, 1 command;" in out.getvalue()


@pytest.mark.parametrize(
    ("count", "text"), [(0, "0 commands"), (1, "1 command"), (2, "2 commands")]
)
def test_plural(count, text):
    assert services.plural(count, "command") == text


@pytest.mark.browser
def test_reimporting_a_runbook_in_the_browser_saves_a_new_version(browser, start_web, personas):
    """Upload, preview, save under the taken name, then 'Save as version 2' in a real browser."""
    import os

    server = start_web()
    personas.member.set_password("member-pass-2026")
    personas.member.save()
    template = services.import_runbook(
        personas.member, personas.project, PAYMENTS.read_bytes()
    ).template
    from tests.conftest import login_page

    page = login_page(browser, server.url, "mia-member", "member-pass-2026")
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.goto(f"{server.url}{URL}")
    page.set_input_files("input[name=file]", str(PAYMENTS))
    page.click("button:has-text('Preview')")
    page.wait_for_selector("#gates-title")
    assert page.locator(".gate-report tbody tr").count() == 9
    page.click("button[value=save]")
    page.wait_for_selector("#conflict-title")
    assert "exists already" in page.inner_text("#conflict-title")
    # The upload survived the refused save: the preview is still on the page.
    assert "Preview: Payments Service Release Runbook" in page.inner_text("#preview-title")
    shot = os.environ.get("IMPORT_SCREENSHOT")
    if shot:
        page.screenshot(path=shot, full_page=True)
    page.click("button[value=save-version]")
    page.wait_for_selector("h1")
    assert page.url.endswith(f"/p/shop/checklists/templates/{template.pk}/")
    assert "version 2" in page.inner_text("hgroup")
    assert "Saved version 2 of Payments Service Release Runbook" in page.content()
    assert problems == []
    template.refresh_from_db()
    assert template.current_version.number == 2
    page.context.close()


def test_template_and_run_pages_show_labels_and_keep_step_code_in_its_step(client, personas):
    template = services.import_runbook(
        personas.member, personas.project, PAYMENTS.read_bytes()
    ).template
    run = services.create_run(personas.member, template)
    client.force_login(personas.member)
    for url in (
        f"/p/shop/checklists/templates/{template.pk}/",
        f"/p/shop/checklists/runs/{run.pk}/",
    ):
        page = client.get(url).content.decode()
        assert "<figcaption>For Live · bash</figcaption>" in page, url
        assert "<figcaption>Dry run · sql</figcaption>" in page, url
        # The rollback block is shown once, inside its numbered step in the notes.
        assert page.count("./deploy.sh rollback --to previous") == 1, url
        step = page[page.index("Execute Rollback") :]
        assert step.index("./deploy.sh rollback") < step.index("Tell people"), url
        assert "Execute Rollback · bash" not in page, url


def test_pages_show_the_label_above_its_group_of_items(client, personas):
    template = services.import_runbook(
        personas.member, personas.project, PAYMENTS.read_bytes()
    ).template
    run = services.create_run(personas.member, template)
    client.force_login(personas.member)
    for url in (
        f"/p/shop/checklists/templates/{template.pk}/",
        f"/p/shop/checklists/runs/{run.pk}/",
    ):
        page = client.get(url).content.decode()
        live = page.index('<li class="group-label"><strong>For Live</strong>')
        sandbox = page.index("<strong>For Sandbox</strong>")
        assert live < page.index("Settlement report shows") < sandbox, url
        assert sandbox < page.index("Test merchants can still sign up"), url
        assert page.count("<strong>For Live</strong>") == 1, url
