"""Evidence: files in a private Azure Blob container (Azurite here), links, and the rules
around them. Downloads only go through the access-checked view."""

from __future__ import annotations

import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from checklists import selectors, services
from checklists.models import Evidence, RunItem

CONTAINER = "evidence-test"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(200))
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"

RUNBOOK = """# Go-live

## Proof (NO-GO)

- [ ] Load test report attached
- [ ] Pen test signed off
"""


@pytest.fixture
def blob(azure_storage):  # noqa: ANN001, ANN201
    """Django's default storage on a private container in Azurite for this test."""
    return azure_storage(CONTAINER)


@pytest.fixture
def run(personas):  # noqa: ANN001, ANN201
    template = services.import_runbook(personas.member, personas.project, RUNBOOK).template
    first = template.current_version.items.get(text="Load test report attached")
    services.update_item(personas.member, template, first.pk, evidence_required=True)
    return services.create_run(personas.member, template, environment=personas.production)


def row(run, text: str) -> RunItem:  # noqa: ANN001
    return RunItem.objects.select_related("item").get(run=run, item__text=text)


def upload(client, run, item: RunItem, name: str, content: bytes):  # noqa: ANN001, ANN201
    return client.post(
        f"/p/shop/checklists/runs/{run.pk}/items/{item.pk}/evidence/",
        {"file": SimpleUploadedFile(name, content)},
        HTTP_HX_REQUEST="true",
    )


def test_upload_goes_to_the_private_container_and_back_through_the_view(
    client, personas, run, blob
):
    client.force_login(personas.member)
    report = row(run, "Load test report attached")
    response = upload(client, run, report, "load-test.png", PNG)
    assert response.status_code == 200, response.content.decode()
    assert "load-test.png" in response.content.decode()
    evidence = Evidence.objects.get(run_item=report)
    assert (evidence.kind, evidence.size, evidence.content_type) == ("file", len(PNG), "image/png")
    assert evidence.file.name.startswith(f"evidence/{personas.project.pk}/{run.pk}/")
    stored = blob.get_blob_client(evidence.file.name).download_blob().readall()
    assert stored == PNG
    # The container is private: the blob's own address answers nobody without a signature.
    plain_url = blob.get_blob_client(evidence.file.name).url
    assert httpx.get(plain_url).status_code in (403, 404, 409)
    client.force_login(personas.viewer)
    download = client.get(f"/p/shop/checklists/runs/{run.pk}/evidence/{evidence.pk}/")
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == PNG
    assert download["Content-Disposition"].startswith("attachment")
    assert download["Content-Type"] == "image/png"
    client.force_login(personas.outsider)
    assert (
        client.get(f"/p/shop/checklists/runs/{run.pk}/evidence/{evidence.pk}/").status_code == 404
    )


def test_evidence_required_item_ticks_only_with_evidence(client, personas, run, blob):
    client.force_login(personas.member)
    report = row(run, "Load test report attached")
    refused = client.post(
        f"/p/shop/checklists/runs/{run.pk}/items/{report.pk}/tick/",
        {"version": report.version},
        HTTP_HX_REQUEST="true",
    )
    assert refused.status_code == 400 and "needs evidence" in refused.content.decode()
    upload(client, run, report, "report.pdf", PDF)
    report.refresh_from_db()
    ticked = client.post(
        f"/p/shop/checklists/runs/{run.pk}/items/{report.pk}/tick/",
        {"version": report.version},
        HTTP_HX_REQUEST="true",
    )
    assert ticked.status_code == 200
    assert row(run, "Load test report attached").state == "done"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("setup.exe", b"MZ\x90\x00", "not accepted"),
        ("page.html", b"<script>alert(1)</script>", "not accepted"),
        ("fake.png", b"<html><script>alert(1)</script></html>", "not a png"),
        ("notes.txt", b"text\x00with NUL", "binary"),
        ("empty.pdf", b"", "empty"),
    ],
)
def test_disallowed_files_are_refused_and_nothing_is_stored(
    client, personas, run, blob, name, content, message
):
    client.force_login(personas.member)
    item = row(run, "Pen test signed off")
    response = upload(client, run, item, name, content)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Evidence.objects.exists()
    assert list(blob.list_blobs()) == [] or all(
        not b.name.endswith(name) for b in blob.list_blobs()
    )
    item.refresh_from_db()
    assert item.version == 1


def test_files_over_25_mib_are_refused(personas, run, blob):
    from django.core.exceptions import ValidationError

    big = SimpleUploadedFile("huge.log", b"x" * (25 * 1024 * 1024 + 1))
    with pytest.raises(ValidationError, match="25 MiB"):
        services.add_evidence_file(personas.member, row(run, "Pen test signed off"), big)
    exactly = SimpleUploadedFile("max.log", b"y" * (25 * 1024 * 1024))
    evidence = services.add_evidence_file(personas.member, row(run, "Pen test signed off"), exactly)
    assert evidence.size == 25 * 1024 * 1024


def test_removing_evidence_deletes_the_blob_but_not_the_last_proof_of_a_done_item(
    client, personas, run, blob, django_capture_on_commit_callbacks
):
    report = row(run, "Load test report attached")
    evidence = services.add_evidence_file(personas.member, report, SimpleUploadedFile("r.pdf", PDF))
    report.refresh_from_db()
    services.tick(personas.member, report, expected_version=report.version)
    client.force_login(personas.member)
    refused = client.post(
        f"/p/shop/checklists/runs/{run.pk}/evidence/{evidence.pk}/delete/", HTTP_HX_REQUEST="true"
    )
    assert refused.status_code == 400 and "untick the item" in refused.content.decode()
    assert Evidence.objects.filter(pk=evidence.pk).exists()
    report.refresh_from_db()
    services.untick(personas.member, report, expected_version=report.version)
    with django_capture_on_commit_callbacks(execute=True):
        removed = client.post(
            f"/p/shop/checklists/runs/{run.pk}/evidence/{evidence.pk}/delete/",
            HTTP_HX_REQUEST="true",
        )
    assert removed.status_code == 200
    assert not Evidence.objects.filter(pk=evidence.pk).exists()
    assert not blob.get_blob_client(evidence.file.name).exists()


def test_links_and_evidence_files_for_the_bundle(personas, run, blob):
    pen = row(run, "Pen test signed off")
    services.add_evidence_link(personas.member, pen, "https://tickets.example.com/SEC-12", "SEC-12")
    services.add_evidence_file(personas.member, pen, SimpleUploadedFile("pentest.pdf", PDF))
    files = list(selectors.evidence_files(run))
    assert len(files) == 1
    name, handle = files[0]
    with handle:
        assert handle.read() == PDF
    assert name.startswith(f"evidence/{pen.pk}/") and name.endswith("-pentest.pdf")
    report = selectors.run_report(run)
    kinds = {e["kind"]: e for i in report["items"] for e in i["evidence"]}
    assert kinds["link"]["url"] == "https://tickets.example.com/SEC-12"
    assert kinds["file"]["storage_name"].startswith("evidence/")
    assert kinds["file"]["size"] == len(PDF)


def test_evidence_changes_are_published_for_live_pages(personas, run, blob):
    from releasecenter.models import AuditEvent

    pen = row(run, "Pen test signed off")
    services.add_evidence_link(personas.member, pen, "https://ci.example.com/5")
    event = AuditEvent.objects.filter(topic=f"run:{run.pk}").latest("id")
    assert event.verb == "run.item.evidence_added"
    assert event.data["item"] == str(pen.pk) and event.data["version"] == 2
    assert event.data["by"] == "mia-member" and event.data["state"] == "open"


def test_api_uploads_evidence(api_client_for, personas, run, blob):
    api = api_client_for(personas.member)
    pen = row(run, "Pen test signed off")
    url = f"/api/v1/projects/shop/checklist-runs/{run.pk}/items/{pen.pk}/evidence"
    response = api.post(url, {"file": SimpleUploadedFile("scan.json", b'{"ok": true}')})
    assert response.status_code == 201, response.content
    assert response.json()["content_type"] == "application/json"
    link = api.post(url, {"url": "https://ci.example.com/9"}, format="json")
    assert link.status_code == 201 and link.json()["kind"] == "link"
    assert (
        api_client_for(personas.outsider).post(url, {"url": "https://x.example"}).status_code == 404
    )


def test_local_folder_storage_by_default(client, personas, run, settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    client.force_login(personas.member)
    pen = row(run, "Pen test signed off")
    assert upload(client, run, pen, "out.log", b"all good\n").status_code == 200
    evidence = Evidence.objects.get(run_item=pen)
    assert (tmp_path / evidence.file.name).read_bytes() == b"all good\n"
    download = client.get(f"/p/shop/checklists/runs/{run.pk}/evidence/{evidence.pk}/")
    assert b"".join(download.streaming_content) == b"all good\n"


LIMIT = 25 * 1024 * 1024


def test_upload_view_refuses_a_file_over_25_mib_and_takes_one_of_exactly_25(
    client, personas, run, blob
):
    client.force_login(personas.member)
    pen = row(run, "Pen test signed off")
    refused = upload(client, run, pen, "huge.log", b"x" * (LIMIT + 1))
    assert refused.status_code == 400
    assert "Evidence files are at most 25 MiB." in refused.content.decode()
    assert not Evidence.objects.exists()
    assert [b.name for b in blob.list_blobs() if b.name.endswith("huge.log")] == []
    pen.refresh_from_db()
    assert pen.version == 1
    accepted = upload(client, run, pen, "max.log", b"y" * LIMIT)
    assert accepted.status_code == 200, accepted.content.decode()[:300]
    evidence = Evidence.objects.get(run_item=pen)
    assert evidence.size == LIMIT
    assert blob.get_blob_client(evidence.file.name).get_blob_properties().size == LIMIT


def test_api_refuses_a_file_over_25_mib(api_client_for, personas, run, blob):
    api = api_client_for(personas.member)
    pen = row(run, "Pen test signed off")
    url = f"/api/v1/projects/shop/checklist-runs/{run.pk}/items/{pen.pk}/evidence"
    refused = api.post(url, {"file": SimpleUploadedFile("huge.log", b"x" * (LIMIT + 1))})
    assert refused.status_code == 400
    assert "25 MiB" in refused.content.decode()
    assert not Evidence.objects.exists()
    assert [b.name for b in blob.list_blobs() if b.name.endswith("huge.log")] == []
    accepted = api.post(url, {"file": SimpleUploadedFile("max.log", b"y" * LIMIT)})
    assert accepted.status_code == 201, accepted.content
    assert accepted.json()["size"] == LIMIT


def test_download_of_a_blob_that_has_gone_missing_is_a_clear_404(client, personas, run, blob):
    pen = row(run, "Pen test signed off")
    evidence = services.add_evidence_file(
        personas.member, pen, SimpleUploadedFile("pentest.pdf", PDF)
    )
    # Lost outside the application (a retention rule, a restore from an older backup).
    blob.get_blob_client(evidence.file.name).delete_blob()
    client.force_login(personas.viewer)
    response = client.get(f"/p/shop/checklists/runs/{run.pk}/evidence/{evidence.pk}/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "pentest.pdf" in page and "no longer in storage" in page
    assert f"/p/shop/checklists/runs/{run.pk}/#item-{pen.pk}" in page


def test_download_of_a_local_file_that_has_gone_missing_is_a_clear_404(
    client, personas, run, settings, tmp_path
):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    pen = row(run, "Pen test signed off")
    evidence = services.add_evidence_file(
        personas.member, pen, SimpleUploadedFile("out.log", b"all good\n")
    )
    (tmp_path / evidence.file.name).unlink()
    client.force_login(personas.member)
    response = client.get(f"/p/shop/checklists/runs/{run.pk}/evidence/{evidence.pk}/")
    assert response.status_code == 404
    assert "no longer in storage" in response.content.decode()
    # The record stays: the run still shows what was attached, and by whom.
    assert Evidence.objects.filter(pk=evidence.pk).exists()
