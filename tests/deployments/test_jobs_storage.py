"""The snapshot a deployment takes before applying is an artifact in Azure Blob Storage (Azurite
here) when storage is configured: the worker writes it there, and a member of the project
downloads it through the deployment page, never from the private container directly."""

from __future__ import annotations

import httpx
import pytest
import yaml

from .jobs_helpers import approved_release, configure, wait_status
from .test_deploy_worker import start

pytestmark = pytest.mark.celery_worker

CONTAINER = "deploy-snapshots-test"


@pytest.fixture
def blob(azure_storage):  # noqa: ANN001, ANN201
    """This process's default storage on a private Azurite container (the worker gets the
    same through its environment)."""
    return azure_storage(CONTAINER)


def test_the_snapshot_goes_to_blob_storage_and_members_download_it_from_the_page(
    personas, start_sim, start_worker, blob, azurite, client, settings, tmp_path
):
    sim = start_sim(rollout_seconds=0.1)
    configure(personas, sim)
    release = approved_release(personas)
    local = tmp_path / "media"
    start_worker(
        AZURE_STORAGE_CONNECTION_STRING=azurite,
        AZURE_STORAGE_CONTAINER=CONTAINER,
        # Were the worker to fall back to the local folder, it would write here.
        RELEASECENTER_VAR_DIR=str(tmp_path),
    )
    deployment = start(personas, release)
    done = wait_status(deployment.pk, "succeeded")

    name = done.snapshot_path
    assert name.startswith(f"deployments/{personas.project.pk}/{done.pk}/")
    stored = blob.get_blob_client(name).download_blob().readall().decode()
    document = yaml.safe_load(stored)
    assert document["kind"] == "List"
    images = {
        item["metadata"]["name"]: item["spec"]["template"]["spec"]["containers"][0]["image"]
        for item in document["items"]
    }
    assert images == {"api": "registry.example/api:1.3.0", "web": "registry.example/web:1.3.0"}
    assert not local.exists() or not any(local.rglob("snapshot.yaml"))
    # The container is private: the blob's own address answers nobody without a signature.
    assert httpx.get(blob.get_blob_client(name).url).status_code in (403, 404, 409)

    page_url = f"/p/shop/deployments/{done.pk}/"
    link = f"/p/shop/deployments/{done.pk}/snapshot.yaml"
    client.force_login(personas.viewer)
    assert link in client.get(page_url).content.decode()
    download = client.get(link)
    assert download.status_code == 200
    assert download["Content-Disposition"].startswith("attachment")
    assert download["Content-Type"] == "application/yaml"
    assert b"".join(download.streaming_content).decode() == stored
    client.force_login(personas.outsider)
    assert client.get(link).status_code == 404
