"""Templates are versioned: every edit in the UI makes a new version, and a run keeps its own."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from checklists import drafts, services
from checklists.models import ChecklistTemplate, Item, RunItem, Section
from releasecenter.models import AuditEvent

RUNBOOK = """# Release

## Prepare (T-1 hour)

- [ ] Announce the window
- [ ] Freeze merges
  - [ ] Tell the mobile team

## Deploy (NO-GO)

- [ ] Roll out

  ```bash
  make deploy
  ```
"""


@pytest.fixture
def template(personas):  # noqa: ANN001, ANN201
    return services.import_runbook(
        personas.member, personas.project, RUNBOOK, name="Release"
    ).template


def texts(template: ChecklistTemplate) -> list[str]:
    template.refresh_from_db()
    return list(
        Item.objects.filter(version=template.current_version)
        .order_by("position")
        .values_list("text", flat=True)
    )


def section_id(template: ChecklistTemplate, title: str) -> int:
    template.refresh_from_db()
    return Section.objects.get(version=template.current_version, title__startswith=title).pk


def item_id(template: ChecklistTemplate, text: str) -> int:
    template.refresh_from_db()
    return Item.objects.get(version=template.current_version, text=text).pk


def op(client, template, name: str, target: int, version: int | None = None):  # noqa: ANN001, ANN201
    template.refresh_from_db()
    return client.post(
        f"/p/shop/checklists/templates/{template.pk}/op/",
        {"op": name, "target": target, "version": version or template.current_version.number},
    )


def test_a_run_keeps_the_version_it_started_from(client, personas, template):
    run = services.create_run(personas.member, template, environment=personas.staging)
    client.force_login(personas.member)
    response = client.post(
        f"/p/shop/checklists/templates/{template.pk}/edit/item-add/",
        {
            "section": section_id(template, "Deploy"),
            "version": 1,
            "text": "Watch the error rate",
            "severity": "warning",
            "due_offset": "+15m",
            "owner_role": "DevOps Engineer",
            "evidence_required": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()
    template.refresh_from_db()
    assert template.current_version.number == 2
    added = Item.objects.get(version=template.current_version, text="Watch the error rate")
    assert (added.severity, added.due_offset_minutes, added.owner_role) == (
        "warning",
        15,
        "DevOps Engineer",
    )
    assert added.evidence_required
    # The run started on version 1 still has its four items and none of the new one.
    assert run.template_version.number == 1
    run_texts = set(RunItem.objects.filter(run=run).values_list("item__text", flat=True))
    assert "Watch the error rate" not in run_texts and len(run_texts) == 4
    page = client.get(f"/p/shop/checklists/runs/{run.pk}/").content.decode()
    assert "Watch the error rate" not in page
    newer = services.create_run(personas.member, template)
    assert newer.items.count() == 5


def test_edit_an_item_and_a_section(client, personas, template):
    client.force_login(personas.member)
    form = client.get(
        f"/p/shop/checklists/templates/{template.pk}/edit/item-edit/?id="
        f"{item_id(template, 'Roll out')}"
    )
    assert form.status_code == 200
    assert "make deploy" in form.content.decode()
    response = client.post(
        f"/p/shop/checklists/templates/{template.pk}/edit/item-edit/",
        {
            "id": item_id(template, "Roll out"),
            "version": 1,
            "text": "Roll out every service",
            "severity": "no-go",
            "due_offset": "0",
            "commands": "```bash\nmake deploy ENV=prod\n```\n\n```sql\nselect 1;\n```",
        },
    )
    assert response.status_code == 302
    item = Item.objects.get(pk=item_id(template, "Roll out every service"))
    assert item.commands == [
        {"language": "bash", "code": "make deploy ENV=prod"},
        {"language": "sql", "code": "select 1;"},
    ]
    response = client.post(
        f"/p/shop/checklists/templates/{template.pk}/edit/section-edit/",
        {"id": section_id(template, "Prepare"), "version": 2, "title": "Get ready", "notes": "Hi"},
    )
    assert response.status_code == 302
    template.refresh_from_db()
    assert template.current_version.number == 3
    assert Section.objects.filter(version=template.current_version, title="Get ready").exists()


def test_reorder_and_delete(client, personas, template):
    client.force_login(personas.member)
    assert (
        op(client, template, "item-down", item_id(template, "Announce the window")).status_code
        == 302
    )
    assert texts(template)[:2] == ["Freeze merges", "Tell the mobile team"]
    assert texts(template)[2] == "Announce the window"
    op(client, template, "section-up", section_id(template, "Deploy"))
    assert texts(template)[0] == "Roll out"
    op(client, template, "item-delete", item_id(template, "Freeze merges"))
    # The sub-item goes with its parent.
    assert texts(template) == ["Roll out", "Announce the window"]
    op(client, template, "section-delete", section_id(template, "Deploy"))
    assert texts(template) == ["Announce the window"]
    template.refresh_from_db()
    assert template.current_version.number == 5
    assert AuditEvent.objects.filter(verb="checklist_template.edited").count() == 4


def test_delete_buttons_ask_for_confirmation(client, personas, template):
    client.force_login(personas.member)
    page = client.get(f"/p/shop/checklists/templates/{template.pk}/").content.decode()
    assert page.count('data-confirm="Delete this item') == 4
    assert page.count('data-confirm="Delete this section') == 3


def test_add_section_and_sub_item(client, personas, template):
    client.force_login(personas.member)
    client.post(
        f"/p/shop/checklists/templates/{template.pk}/edit/section-add/",
        {
            "version": 1,
            "title": "Verify (T+15 minutes)",
            "notes": "| a | b |\n|---|---|\n| 1 | 2 |",
        },
    )
    parent = item_id(template, "Roll out")
    response = client.post(
        f"/p/shop/checklists/templates/{template.pk}/edit/item-add/",
        {"parent": parent, "version": 2, "text": "Tier 1 first", "severity": "no-go"},
    )
    assert response.status_code == 302
    child = Item.objects.get(pk=item_id(template, "Tier 1 first"))
    assert child.parent.text == "Roll out" and child.depth == 1
    page = client.get(f"/p/shop/checklists/templates/{template.pk}/").content.decode()
    assert "<table>" in page  # section notes are rendered Markdown


def test_stale_editor_is_told_not_overwritten(client, personas, template):
    client.force_login(personas.member)
    op(client, template, "item-down", item_id(template, "Announce the window"), version=1)
    before = texts(template)
    response = op(client, template, "item-delete", item_id(template, "Roll out"), version=1)
    assert response.status_code == 302
    assert texts(template) == before
    template.refresh_from_db()
    assert template.current_version.number == 2
    page = client.get(response["Location"]).content.decode()
    assert "was saved since you opened version 1" in page


def test_bad_item_input_changes_nothing(client, personas, template):
    client.force_login(personas.member)
    response = client.post(
        f"/p/shop/checklists/templates/{template.pk}/edit/item-add/",
        {
            "section": section_id(template, "Deploy"),
            "version": 1,
            "text": "x",
            "severity": "none",
            "due_offset": "soon",
        },
    )
    assert response.status_code == 200
    assert "Write a due offset like" in response.content.decode()
    template.refresh_from_db()
    assert template.current_version.number == 1
    with pytest.raises(ValidationError):
        services.add_item(
            personas.member, template, section_id=section_id(template, "Deploy"), text=""
        )


def test_an_owner_role_with_brackets_is_refused(client, personas, template):
    # The export writes the role as "[owner: …]"; a bracket inside would not import back.
    client.force_login(personas.member)
    response = client.post(
        f"/p/shop/checklists/templates/{template.pk}/edit/item-edit/",
        {
            "id": item_id(template, "Roll out"),
            "version": 1,
            "text": "Roll out",
            "severity": "no-go",
            "owner_role": "Ops [EU]",
        },
    )
    assert response.status_code == 200
    assert "An owner role cannot contain [ or ]." in response.content.decode()
    template.refresh_from_db()
    assert template.current_version.number == 1


def test_viewers_cannot_edit_and_outsiders_see_nothing(client, personas, template):
    client.force_login(personas.viewer)
    page = client.get(f"/p/shop/checklists/templates/{template.pk}/")
    assert page.status_code == 200
    assert "Delete section" not in page.content.decode()
    assert op(client, template, "item-delete", item_id(template, "Roll out")).status_code == 403
    client.force_login(personas.outsider)
    assert client.get(f"/p/shop/checklists/templates/{template.pk}/").status_code == 404
    assert op(client, template, "item-delete", item_id(template, "Roll out")).status_code == 404
    assert texts(template)[-1] == "Roll out"


def test_old_versions_stay_readable(client, personas, template):
    services.delete_item(personas.member, template, item_id(template, "Roll out"))
    client.force_login(personas.viewer)
    old = client.get(f"/p/shop/checklists/templates/{template.pk}/v1/").content.decode()
    assert "Roll out" in old and "an earlier version" in old
    current = client.get(f"/p/shop/checklists/templates/{template.pk}/").content.decode()
    assert "Roll out" not in current


def test_new_empty_template_then_settings_and_roles(client, personas):
    client.force_login(personas.member)
    response = client.post("/p/shop/checklists/new/", {"name": "Rollback", "kind": "rollback"})
    assert response.status_code == 302
    template = ChecklistTemplate.objects.get(name="Rollback")
    assert template.current_version.number == 1
    assert client.get(response["Location"]).status_code == 200
    client.post(
        f"/p/shop/checklists/templates/{template.pk}/op/",
        {"op": "roles", "version": 1, "roles": "Technical Lead\nDevOps Engineer\n"},
    )
    template.refresh_from_db()
    assert template.current_version.signoff_roles == ["Technical Lead", "DevOps Engineer"]
    client.post(
        f"/p/shop/checklists/templates/{template.pk}/op/",
        {"op": "settings", "name": "Rollback plan", "kind": "rollback"},
    )
    template.refresh_from_db()
    assert template.name == "Rollback plan"
    assert (
        client.post(
            "/p/shop/checklists/new/", {"name": "Rollback plan", "kind": "other"}
        ).status_code
        == 200
    )


def test_archive_needs_a_lead_and_keeps_runs(client, personas, template):
    run = services.create_run(personas.member, template)
    client.force_login(personas.member)
    client.post(f"/p/shop/checklists/templates/{template.pk}/op/", {"op": "archive"})
    template.refresh_from_db()
    assert template.archived_at is None
    client.force_login(personas.lead)
    client.post(f"/p/shop/checklists/templates/{template.pk}/op/", {"op": "archive"})
    template.refresh_from_db()
    assert template.archived_at is not None
    assert client.get(f"/p/shop/checklists/runs/{run.pk}/").status_code == 200
    with pytest.raises(ValidationError):
        services.create_run(personas.member, template)
    listing = client.get("/p/shop/checklists/").content.decode()
    assert f"/checklists/templates/{template.pk}/" not in listing


def test_export_view_round_trips(client, personas, template):
    client.force_login(personas.viewer)
    response = client.get(f"/p/shop/checklists/templates/{template.pk}/export.md")
    assert response["Content-Disposition"] == 'attachment; filename="release.md"'
    again = services.import_runbook(
        personas.member, personas.project, response.content.decode(), name="Again"
    ).template
    assert (
        drafts.load(again.current_version).counts()
        == drafts.load(template.current_version).counts()
    )
    assert texts(again) == texts(template)


def test_template_list_paginates_and_keeps_its_query_count(
    client, personas, django_assert_max_num_queries
):
    for i in range(30):
        services.create_template(personas.member, personas.project, name=f"T{i:02}", kind="other")
    client.force_login(personas.viewer)
    with django_assert_max_num_queries(10):
        page = client.get("/p/shop/checklists/")
    assert page.status_code == 200
    assert "Page 1 of 2" in page.content.decode()


def test_a_template_with_runs_stays_but_its_project_can_go(personas, template):
    from django.db.models import RestrictedError

    from checklists.models import Run

    services.create_run(personas.member, template)
    with pytest.raises(RestrictedError):
        template.delete()
    personas.project.delete()
    assert not Run.objects.exists() and not ChecklistTemplate.objects.exists()
