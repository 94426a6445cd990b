"""Runs: ticking, N/A, notes, conflicts, progress, due times, completion, and the selectors the
release work builds on."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from checklists import selectors, services
from checklists.models import Run, RunItem
from releasecenter.models import AuditEvent
from tests.checklists.conftest import PAYMENTS, runbook_with

GATED = """# Release

## Before (T-2 hours)

- [ ] Backup taken
- [x] Ticket approved

## Gates (NO-GO)

- [ ] Tests green
  - [ ] Unit
  - [ ] Integration
- [ ] Payments checked (CONDITIONAL)

## Watch (T+15 minutes) (WARNING)

- [ ] Error rate normal

## Tidy up

- [ ] Close the ticket
"""


@pytest.fixture
def run(personas):  # noqa: ANN001, ANN201
    template = services.import_runbook(personas.member, personas.project, GATED, name="R").template
    return services.create_run(
        personas.member,
        template,
        environment=personas.staging,
        planned_start=timezone.now() + timedelta(hours=1),
    )


def item(run: Run, text: str) -> RunItem:
    return RunItem.objects.select_related("item").get(run=run, item__text=text)


def post(client, run: Run, row: RunItem, action: str, **data):  # noqa: ANN001, ANN003, ANN201
    data.setdefault("version", row.version)
    return client.post(
        f"/p/shop/checklists/runs/{run.pk}/items/{row.pk}/{action}/", data, HTTP_HX_REQUEST="true"
    )


def test_create_run_makes_one_row_per_item_and_prechecked_start_done(personas, run):
    assert run.items.count() == 8  # sub-items included
    assert item(run, "Ticket approved").state == "done"
    assert item(run, "Backup taken").state == "open"
    event = AuditEvent.objects.get(topic=f"run:{run.pk}", verb="run.created")
    assert event.actor == personas.member
    assert event.after["items"] == 8 and event.after["environment"] == "staging"


def test_tick_untick_na_note_each_record_who_when_and_an_event(client, personas, run):
    client.force_login(personas.member)
    row = item(run, "Backup taken")
    response = post(client, run, row, "tick")
    assert response.status_code == 200
    assert 'data-state="done"' in response.content.decode()
    row.refresh_from_db()
    assert (row.state, row.done_by, row.version) == ("done", personas.member, 2)
    assert row.done_at is not None
    assert post(client, run, row, "untick").status_code == 200
    row.refresh_from_db()
    assert (row.state, row.done_by, row.done_at) == ("open", None, None)
    assert post(client, run, row, "na", reason="No schema change").status_code == 200
    row.refresh_from_db()
    assert (row.state, row.na_reason) == ("na", "No schema change")
    assert post(client, run, row, "note", note="Checked with Ana").status_code == 200
    row.refresh_from_db()
    assert row.note == "Checked with Ana" and row.version == 5
    events = list(AuditEvent.objects.filter(topic=f"run:{run.pk}", object_id=str(row.pk)))
    assert [e.verb for e in events] == [
        "run.item.ticked",
        "run.item.unticked",
        "run.item.na",
        "run.item.noted",
    ]
    assert all(e.actor == personas.member for e in events)
    assert events[0].data == {
        "item": str(row.pk),
        "state": "done",
        "by": "mia-member",
        "version": 2,
        "change": "tick",
    }
    assert (
        events[2].before["state"] == "open" and events[2].after["na_reason"] == "No schema change"
    )


def test_na_needs_a_reason(client, personas, run):
    client.force_login(personas.member)
    row = item(run, "Backup taken")
    response = post(client, run, row, "na", reason="  ")
    assert response.status_code == 400
    assert "cannot be empty" in response.content.decode()
    row.refresh_from_db()
    assert row.state == "open" and row.version == 1


def test_same_item_changed_twice_the_later_one_is_told(client, personas, run, api_client_for):
    row = item(run, "Backup taken")
    seen = row.version
    services.tick(personas.lead, row, expected_version=seen)
    client.force_login(personas.member)
    response = post(client, run, row, "na", reason="Not needed", version=seen)
    assert response.status_code == 409
    page = response.content.decode()
    assert "liam-lead changed this item" in page and "your change was not applied" in page
    row.refresh_from_db()
    assert (row.state, row.done_by) == ("done", personas.lead)
    api = api_client_for(personas.member)
    answer = api.post(
        f"/api/v1/projects/shop/checklist-runs/{run.pk}/items/{row.pk}/",
        {"action": "untick", "version": seen},
        format="json",
    )
    assert answer.status_code == 409
    assert answer.json()["item"]["state"] == "done"
    assert "liam-lead" in answer.json()["detail"]
    ok = api.post(
        f"/api/v1/projects/shop/checklist-runs/{run.pk}/items/{row.pk}/",
        {"action": "untick", "version": row.version},
        format="json",
    )
    assert ok.status_code == 200 and ok.json()["state"] == "open"


def test_different_items_at_once_are_both_kept(personas, run):
    first, second = item(run, "Backup taken"), item(run, "Tests green")
    services.tick(personas.member, first, expected_version=first.version)
    services.tick(personas.lead, second, expected_version=second.version)
    assert item(run, "Backup taken").state == "done"
    assert item(run, "Tests green").state == "done"


def test_conflict_without_javascript_redirects_with_the_message(client, personas, run):
    row = item(run, "Backup taken")
    services.tick(personas.lead, row, expected_version=row.version)
    client.force_login(personas.member)
    response = client.post(
        f"/p/shop/checklists/runs/{run.pk}/items/{row.pk}/untick/", {"version": 1}, follow=True
    )
    assert "liam-lead changed this item" in response.content.decode()


def test_progress_due_times_and_overdue(client, personas):
    template = services.import_runbook(personas.member, personas.project, GATED, name="D").template
    started = timezone.now() - timedelta(hours=3)
    run = services.create_run(personas.member, template, planned_start=started)
    services.tick(personas.member, item(run, "Unit"), expected_version=1)
    client.force_login(personas.viewer)
    response = client.get(f"/p/shop/checklists/runs/{run.pk}/")
    page = response.content.decode()
    # Ticket approved (pre-checked) and Unit are done: 2 of 8.
    assert 'data-run-progress value="2" max="8"' in page
    sections = {s["section"].title: s["progress"] for s in response.context["sections"]}
    assert sections["Before (T-2 hours)"] == (1, 2)
    assert sections["Gates (NO-GO)"] == (1, 4)
    backup = next(
        ri
        for s in response.context["sections"]
        for ri in s["items"]
        if ri.item.text == "Backup taken"
    )
    assert backup.due_at == started - timedelta(hours=2)
    assert backup.overdue
    # "Error rate normal" was due at T+15 minutes, also past; "Close the ticket" has no phase.
    overdue = [
        ri.item.text for s in response.context["sections"] for ri in s["items"] if ri.overdue
    ]
    assert overdue == ["Backup taken", "Error rate normal"]
    assert 'class="run-item depth-0 overdue"' in page


def test_run_completes_when_nothing_is_open_and_reopens(
    personas, run, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        for row in RunItem.objects.filter(run=run, state="open"):
            services.tick(personas.member, row, expected_version=row.version)
    run.refresh_from_db()
    assert run.status == "completed" and run.completed_at is not None
    assert AuditEvent.objects.filter(topic=f"run:{run.pk}", verb="run.completed").count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        row = item(run, "Unit")
        services.untick(personas.member, row, expected_version=row.version)
    run.refresh_from_db()
    assert run.status == "open" and run.completed_at is None


def test_evidence_required_item_cannot_be_ticked_without_evidence(client, personas, run):
    row = item(run, "Tests green")
    template = run.template
    services.update_item(personas.member, template, row.item_id, evidence_required=True)
    strict = services.create_run(personas.member, template)
    row = item(strict, "Tests green")
    client.force_login(personas.member)
    response = post(client, strict, row, "tick")
    assert response.status_code == 400
    assert "needs evidence" in response.content.decode()
    assert item(strict, "Tests green").state == "open"
    services.add_evidence_link(personas.member, row, "https://ci.example.com/builds/981")
    row.refresh_from_db()
    assert post(client, strict, row, "tick").status_code == 200
    assert item(strict, "Tests green").state == "done"


def test_viewers_read_but_cannot_tick_outsiders_get_404(client, api_client_for, personas, run):
    row = item(run, "Backup taken")
    client.force_login(personas.viewer)
    page = client.get(f"/p/shop/checklists/runs/{run.pk}/").content.decode()
    assert "Backup taken" in page and 'data-item-action="tick"' not in page
    assert post(client, run, row, "tick").status_code == 403
    client.force_login(personas.outsider)
    for url in (
        f"/p/shop/checklists/runs/{run.pk}/",
        f"/p/shop/checklists/runs/{run.pk}/items/{row.pk}/",
        f"/p/shop/checklists/runs/{run.pk}/report.json",
    ):
        assert client.get(url).status_code == 404, url
    assert post(client, run, row, "tick").status_code == 404
    api = api_client_for(personas.outsider)
    assert api.get(f"/api/v1/projects/shop/checklist-runs/{run.pk}/").status_code == 404
    assert (
        api.post(
            f"/api/v1/projects/shop/checklist-runs/{run.pk}/items/{row.pk}/",
            {"action": "tick", "version": 1},
            format="json",
        ).status_code
        == 404
    )
    assert item(run, "Backup taken").state == "open"


def test_run_page_queries_do_not_grow_with_items(client, personas, django_assert_max_num_queries):
    counts = []
    client.force_login(personas.member)
    for size in (10, 100):
        text = runbook_with(size, sections=5, title=f"Size {size}")
        template = services.import_runbook(personas.member, personas.project, text).template
        run = services.create_run(personas.member, template, planned_start=timezone.now())
        rows = list(RunItem.objects.filter(run=run)[:3])
        services.add_evidence_link(personas.member, rows[0], "https://ci.example.com/1")
        services.tick(personas.member, rows[1], expected_version=1)
        with django_assert_max_num_queries(12), CaptureQueriesContext(connection) as queries:
            response = client.get(f"/p/shop/checklists/runs/{run.pk}/")
        assert response.status_code == 200
        assert response.content.decode().count('class="run-item ') == size
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_run_lists(client, personas, run, django_assert_max_num_queries):
    template = run.template
    for _ in range(30):
        services.create_run(personas.member, template)
    client.force_login(personas.viewer)
    with django_assert_max_num_queries(10):
        page = client.get("/p/shop/checklists/runs/?show=open")
    assert page.status_code == 200 and "Page 1 of 2" in page.content.decode()
    assert client.get("/p/shop/checklists/runs/?show=missed").status_code == 200
    assert "No runs here." in client.get("/p/shop/checklists/runs/?show=completed").content.decode()


def test_start_a_run_from_the_template_page(client, personas):
    template = services.import_runbook(personas.member, personas.project, GATED, name="X").template
    client.force_login(personas.member)
    response = client.post(
        f"/p/shop/checklists/templates/{template.pk}/runs/",
        {"title": "", "environment": personas.production.pk, "planned_start": "2026-12-01T14:00"},
    )
    assert response.status_code == 302
    run = Run.objects.get(template=template)
    assert run.title == "X — production"
    assert run.planned_start.isoformat() == "2026-12-01T14:00:00+00:00"
    assert response["Location"] == f"/p/shop/checklists/runs/{run.pk}/"


def test_api_creates_lists_and_reads_runs(api_client_for, personas):
    template = services.import_runbook(personas.member, personas.project, GATED, name="Y").template
    api = api_client_for(personas.member)
    created = api.post(
        "/api/v1/projects/shop/checklist-runs/",
        {"template_id": template.pk, "environment": "staging", "title": "From CI"},
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json()["progress"] == {"finished": 1, "total": 8}
    listed = api.get("/api/v1/projects/shop/checklist-runs/").json()
    assert [r["title"] for r in listed["results"]] == ["From CI"]
    detail = api.get(f"/api/v1/projects/shop/checklist-runs/{created.json()['id']}/").json()
    assert [i["text"] for i in detail["items"]][:3] == [
        "Backup taken",
        "Ticket approved",
        "Tests green",
    ]
    bad = api.post(
        "/api/v1/projects/shop/checklist-runs/",
        {"template_id": template.pk, "environment": "moon"},
        format="json",
    )
    assert bad.status_code == 400 and "moon" in str(bad.json())
    viewer = api_client_for(personas.viewer)
    assert (
        viewer.post(
            "/api/v1/projects/shop/checklist-runs/", {"template_id": template.pk}, format="json"
        ).status_code
        == 403
    )


# --- Interfaces for the release work ---------------------------------------------------------


def test_gate_items_in_constant_queries(personas, run, django_assert_num_queries):
    other = services.create_run(personas.member, run.template)
    with django_assert_num_queries(1):
        gates = selectors.gate_items([run.pk, other.pk])
    mine = [g for g in gates if g.run_id == run.pk]
    assert [(g.text, g.severity, g.state) for g in mine] == [
        ("Tests green", "no-go", "open"),
        ("Unit", "no-go", "open"),
        ("Integration", "no-go", "open"),
        ("Payments checked (CONDITIONAL)", "conditional", "open"),
        ("Error rate normal", "warning", "open"),
    ]
    assert mine[1].section_title == "Gates (NO-GO)"
    assert mine[0].key == str(item(run, "Tests green").pk)
    assert len({g.key for g in gates}) == len(gates) == 10
    with pytest.raises(AttributeError):
        mine[0].state = "done"  # frozen
    assert selectors.gate_items([]) == []


def test_run_progress_in_one_query(personas, run, django_assert_num_queries):
    other = services.create_run(personas.member, run.template)
    services.mark_na(
        personas.member, item(other, "Unit"), reason="No unit tests", expected_version=1
    )
    with django_assert_num_queries(1):
        progress = selectors.run_progress([run.pk, other.pk, 999999])
    assert progress == {run.pk: (1, 8), other.pk: (2, 8), 999999: (0, 0)}


def test_run_report_has_every_item_with_who_when_and_evidence(personas, run):
    row = item(run, "Tests green")
    services.add_evidence_link(personas.member, row, "https://ci.example.com/7", "CI run 7")
    row.refresh_from_db()
    services.tick(personas.lead, row, expected_version=row.version)
    services.mark_na(personas.member, item(run, "Unit"), reason="Covered", expected_version=1)
    report = selectors.run_report(run)
    assert report["run"]["environment"] == "staging" and report["run"]["template_version"] == 1
    assert len(report["items"]) == 8
    tests = next(i for i in report["items"] if i["text"] == "Tests green")
    assert tests["state"] == "done" and tests["done_by"] == "liam-lead" and tests["done_at"]
    assert tests["severity"] == "no-go"
    assert tests["evidence"][0]["url"] == "https://ci.example.com/7"
    assert tests["evidence"][0]["uploaded_by"] == "mia-member"
    unit = next(i for i in report["items"] if i["text"] == "Unit")
    assert unit["na_reason"] == "Covered"
    import json

    json.dumps(report)  # ready for a bundle


def test_create_run_validates(personas, run):
    with pytest.raises(ValidationError):
        services.create_run(
            personas.member, run.template, planned_start=timezone.now().replace(tzinfo=None)
        )
    other_env = personas.other_project.environments.first()
    with pytest.raises(ValidationError):
        services.create_run(personas.member, run.template, environment=other_env)


def test_a_run_has_all_three_gate_severities(personas):
    template = services.import_runbook(
        personas.member, personas.project, PAYMENTS.read_bytes()
    ).template
    run = services.create_run(personas.member, template)
    severities = {g.severity for g in selectors.gate_items([run.pk])}
    assert severities == {"no-go", "conditional", "warning"}


def test_run_topic_is_only_for_members(client, personas, run):
    from releasecenter import events

    assert events.topic_project_id(f"run:{run.pk}") == personas.project.pk
    assert events.topic_project_id("run:999999") is None
    client.force_login(personas.outsider)
    assert client.get(f"/events/stream?topic=run:{run.pk}").status_code == 404
    client.force_login(personas.viewer)
    page = client.get(f"/p/shop/checklists/runs/{run.pk}/").content.decode()
    assert f'data-live-topic="run:{run.pk}"' in page


def test_api_schema_describes_the_checklist_endpoints(client, personas):
    client.force_login(personas.member)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    text = schema.content.decode()
    assert "/api/v1/projects/{slug}/checklist-templates/import" in text
    assert "/api/v1/projects/{slug}/checklist-runs/{id}/items/{item_id}/" in text


# --- Pre-checked items that require evidence --------------------------------------------------


def test_a_pre_checked_item_that_requires_evidence_starts_open(client, personas, api_client_for):
    template = services.import_runbook(personas.member, personas.project, GATED, name="P").template
    approved = template.current_version.items.get(text="Ticket approved")
    client.force_login(personas.member)
    # The editor allows both flags; its help text says what a run does with them.
    form = client.get(
        f"/p/shop/checklists/templates/{template.pk}/edit/item-edit/?id={approved.pk}"
    ).content.decode()
    assert "an item that also requires evidence starts open" in form
    saved = client.post(
        f"/p/shop/checklists/templates/{template.pk}/edit/item-edit/",
        {
            "id": approved.pk,
            "version": 1,
            "text": "Ticket approved",
            "severity": "none",
            "pre_checked": "on",
            "evidence_required": "on",
        },
    )
    assert saved.status_code == 302, saved.content.decode()
    template.refresh_from_db()
    edited = template.current_version.items.get(text="Ticket approved")
    assert edited.pre_checked and edited.evidence_required
    page = client.get(f"/p/shop/checklists/templates/{template.pk}/").content.decode()
    assert "starts open in a run until evidence is attached" in page

    started = client.post(f"/p/shop/checklists/templates/{template.pk}/runs/", {"title": ""})
    assert started.status_code == 302
    run = Run.objects.get(template=template)
    row = item(run, "Ticket approved")
    assert (row.state, row.done_at, row.done_by) == ("open", None, None)
    # The evidence rule holds for it like for any other item.
    refused = post(client, run, row, "tick")
    assert refused.status_code == 400 and "needs evidence" in refused.content.decode()
    services.add_evidence_link(personas.member, row, "https://tickets.example.com/CHG-7")
    row.refresh_from_db()
    assert post(client, run, row, "tick").status_code == 200
    assert item(run, "Ticket approved").state == "done"

    # The API opens runs through the same service: nothing starts done in this template now.
    created = api_client_for(personas.member).post(
        "/api/v1/projects/shop/checklist-runs/", {"template_id": template.pk}, format="json"
    )
    assert created.status_code == 201
    assert created.json()["progress"] == {"finished": 0, "total": 8}


def test_an_imported_pre_checked_item_that_requires_evidence_starts_open(personas):
    # The import carries "evidence required" as the marker the export writes.
    text = "# R\n\n## Proof\n\n- [x] Change approved [evidence: required]\n"
    template = services.import_runbook(personas.member, personas.project, text).template
    only = template.current_version.items.get()
    assert (only.text, only.pre_checked, only.evidence_required) == ("Change approved", True, True)
    run = services.create_run(personas.member, template)
    # Its only item is open, so the run does not start completed either.
    assert run.status == "open" and run.completed_at is None
    assert run.items.get().state == "open"
    plain = services.import_runbook(
        personas.member, personas.project, "# R\n\n- [x] Change approved\n", name="Plain"
    ).template
    assert services.create_run(personas.member, plain).status == "completed"


# --- A change must say which version it was made on -------------------------------------------


@pytest.mark.parametrize(
    ("action", "data"),
    [
        ("tick", {}),
        ("untick", {}),
        ("na", {"reason": "Not needed"}),
        ("note", {"note": "Overwrites?"}),
    ],
)
@pytest.mark.parametrize(
    "version", [None, "", "abc", "1.5"], ids=["absent", "empty", "word", "decimal"]
)
def test_a_change_without_a_version_is_refused(client, personas, run, action, data, version):
    row = item(run, "Ticket approved" if action == "untick" else "Backup taken")
    before = (row.state, row.version, row.note, row.na_reason)
    events_before = AuditEvent.objects.filter(topic=f"run:{run.pk}").count()
    if version is not None:
        data = {**data, "version": version}
    client.force_login(personas.member)
    response = client.post(
        f"/p/shop/checklists/runs/{run.pk}/items/{row.pk}/{action}/", data, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 400
    assert "did not say which version of the item" in response.content.decode()
    row.refresh_from_db()
    assert (row.state, row.version, row.note, row.na_reason) == before
    assert AuditEvent.objects.filter(topic=f"run:{run.pk}").count() == events_before


def test_a_change_without_a_version_and_without_javascript_shows_the_message(client, personas, run):
    row = item(run, "Backup taken")
    client.force_login(personas.member)
    response = client.post(
        f"/p/shop/checklists/runs/{run.pk}/items/{row.pk}/tick/", {}, follow=True
    )
    assert "did not say which version of the item" in response.content.decode()
    assert item(run, "Backup taken").state == "open"
