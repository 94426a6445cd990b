"""An object of another project does not exist for you: a lead of project shop who puts the id of
a template, run, item or evidence of project elsewhere into a /p/shop/ or /api/v1/projects/shop/
address gets 404, and nothing of project elsewhere changes."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from checklists import services
from checklists.models import ChecklistTemplate, Evidence, RunItem

SECRET = """# Elsewhere secret runbook

## Vault (NO-GO)

- [ ] Rotate the root token
"""


@pytest.fixture
def local_storage(settings, tmp_path):  # noqa: ANN001, ANN201
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    return tmp_path


@pytest.fixture
def theirs(personas, local_storage):  # noqa: ANN001, ANN201
    """A template, run, item and file evidence of project elsewhere."""
    outcome = services.import_runbook(personas.outsider, personas.other_project, SECRET)
    template = outcome.template
    run = services.create_run(personas.outsider, template)
    row = RunItem.objects.get(run=run)
    evidence = services.add_evidence_file(
        personas.outsider, row, SimpleUploadedFile("root-token.txt", b"s3cr3t\n")
    )
    row.refresh_from_db()
    section = template.current_version.sections.filter(title__startswith="Vault").get()
    return {
        "template": template,
        "run": run,
        "row": row,
        "evidence": evidence,
        "section": section,
    }


@pytest.fixture
def ours(personas):  # noqa: ANN001, ANN201
    template = services.import_runbook(
        personas.member, personas.project, "# Ours\n\n- [ ] Our step\n"
    ).template
    return services.create_run(personas.member, template)


def assert_untouched(theirs: dict) -> None:
    row = RunItem.objects.get(pk=theirs["row"].pk)
    assert (row.state, row.version, row.note) == ("open", theirs["row"].version, "")
    assert Evidence.objects.filter(pk=theirs["evidence"].pk).exists()
    assert Evidence.objects.filter(run_item=row).count() == 1
    template = ChecklistTemplate.objects.get(pk=theirs["template"].pk)
    assert template.current_version.number == 1 and template.archived_at is None
    assert theirs["template"].runs.count() == 1
    assert not theirs["template"].schedules.exists()


def test_pages_answer_404_for_ids_of_another_project(client, personas, theirs, ours):
    t, r, i, e = (theirs[k].pk for k in ("template", "run", "row", "evidence"))
    s = theirs["section"].pk
    client.force_login(personas.lead)  # a lead of shop: no role check stands in the way
    gets = [
        f"/p/shop/checklists/templates/{t}/",
        f"/p/shop/checklists/templates/{t}/v1/",
        f"/p/shop/checklists/templates/{t}/export.md",
        f"/p/shop/checklists/templates/{t}/edit/item-add/?section={s}",
        f"/p/shop/checklists/runs/{r}/",
        f"/p/shop/checklists/runs/{r}/report.json",
        f"/p/shop/checklists/runs/{r}/items/{i}/",
        f"/p/shop/checklists/runs/{r}/evidence/{e}/",
        # Their item or evidence under a run of our own.
        f"/p/shop/checklists/runs/{ours.pk}/items/{i}/",
        f"/p/shop/checklists/runs/{ours.pk}/evidence/{e}/",
    ]
    for url in gets:
        response = client.get(url)
        assert response.status_code == 404, url
        body = response.content.decode() if not response.streaming else ""
        assert "secret" not in body.lower() and "root token" not in body.lower(), url
    posts = [
        (f"/p/shop/checklists/runs/{r}/items/{i}/tick/", {"version": 1}),
        (f"/p/shop/checklists/runs/{r}/items/{i}/note/", {"version": 1, "note": "mine now"}),
        (f"/p/shop/checklists/runs/{ours.pk}/items/{i}/tick/", {"version": 1}),
        (f"/p/shop/checklists/runs/{r}/items/{i}/link/", {"url": "https://x.example/1"}),
        (f"/p/shop/checklists/runs/{r}/evidence/{e}/delete/", {}),
        (f"/p/shop/checklists/runs/{ours.pk}/evidence/{e}/delete/", {}),
        (f"/p/shop/checklists/templates/{t}/op/", {"op": "archive"}),
        (f"/p/shop/checklists/templates/{t}/op/", {"op": "section-delete", "target": s}),
        (f"/p/shop/checklists/templates/{t}/runs/", {"title": "Mine"}),
        (
            f"/p/shop/checklists/templates/{t}/schedules/",
            {"environment": personas.staging.pk, "frequency": "daily", "time_of_day": "09:00"},
        ),
        (
            f"/p/shop/checklists/templates/{t}/edit/section-add/",
            {"version": 1, "title": "Injected"},
        ),
    ]
    for url, data in posts:
        assert client.post(url, data, HTTP_HX_REQUEST="true").status_code == 404, url
    assert_untouched(theirs)


def test_api_answers_404_for_ids_of_another_project(api_client_for, personas, theirs, ours):
    t, r, i = (theirs[k].pk for k in ("template", "run", "row"))
    api = api_client_for(personas.lead)
    base = "/api/v1/projects/shop"
    for url in (
        f"{base}/checklist-templates/{t}/",
        f"{base}/checklist-templates/{t}/export",
        f"{base}/checklist-runs/{r}/",
        f"{base}/checklist-runs/{r}/report",
    ):
        response = api.get(url)
        assert response.status_code == 404, url
        assert "secret" not in response.content.decode().lower(), url
    for url, data in (
        (f"{base}/checklist-runs/{r}/items/{i}/", {"action": "tick", "version": 1}),
        (f"{base}/checklist-runs/{ours.pk}/items/{i}/", {"action": "tick", "version": 1}),
        (f"{base}/checklist-runs/{r}/items/{i}/evidence", {"url": "https://x.example/2"}),
        (f"{base}/checklist-runs/{r}/items/{i}/automation", {}),
    ):
        assert api.post(url, data, format="json").status_code == 404, url
    upload = api.post(
        f"{base}/checklist-runs/{r}/items/{i}/evidence",
        {"file": SimpleUploadedFile("planted.txt", b"planted\n")},
    )
    assert upload.status_code == 404
    # A template id in the body is not found in this project either.
    started = api.post(f"{base}/checklist-runs/", {"template_id": t}, format="json")
    assert started.status_code == 400
    assert "No such template in this project" in started.content.decode()
    assert_untouched(theirs)
