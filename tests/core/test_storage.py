"""The file store on Azurite: `ensure_storage` makes the private container once, and /health
reports a missing container instead of calling the store ok."""

import uuid

import pytest
from django.core.management import call_command


@pytest.fixture
def azure_store(azure_storage):  # noqa: ANN001, ANN201
    """Default storage on a container of Azurite that does not exist yet."""
    return azure_storage(f"health-{uuid.uuid4().hex[:12]}", create=False)


def test_health_fails_on_a_missing_container_until_ensure_storage_makes_it(
    client, db, azure_store, capsys
):
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["failing"] == ["storage"]
    assert response.json()["storage"] == "error: ResourceNotFoundError"

    call_command("ensure_storage")
    assert "created (private)" in capsys.readouterr().out
    # Private: no anonymous read of the container or its blobs.
    assert azure_store.get_container_properties().public_access is None
    assert client.get("/health").json()["storage"] == "ok"

    call_command("ensure_storage")
    assert "exists" in capsys.readouterr().out


def test_stored_files_go_to_the_container(db, azure_store):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    call_command("ensure_storage")
    name = default_storage.save("probe/evidence.txt", ContentFile(b"seen"))
    assert [b.name for b in azure_store.list_blobs()] == [name]
    assert default_storage.open(name).read() == b"seen"


def test_an_unreachable_store_fails_health_at_once_and_ensure_storage_clearly(client, db, settings):
    import time

    from django.core.management.base import CommandError

    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.azure_storage.AzureStorage",
            "OPTIONS": {
                # A port on loopback where nothing listens.
                "connection_string": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
                "K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;",
                "azure_container": "nowhere",
            },
        },
    }
    started = time.monotonic()
    response = client.get("/health")
    assert response.status_code == 503 and response.json()["failing"] == ["storage"]
    assert time.monotonic() - started < 5
    with pytest.raises(CommandError, match="The file store is not usable"):
        call_command("ensure_storage")
