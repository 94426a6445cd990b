"""The file store behind Django's default storage: a private Azure Blob container when
AZURE_STORAGE_CONNECTION_STRING is set, else a local folder.

Nothing creates an Azure container on first upload, so a fresh deployment must make it once
(`manage.py ensure_storage`, which compose's migrate step runs); /health asks for the container
itself, so a missing one shows as a failing store rather than as errors on the first upload.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage


def _azure_container():  # noqa: ANN202
    """The container client of the default storage, or None when it is not Azure."""
    client = getattr(default_storage, "client", None)
    if client is None or not hasattr(client, "get_container_properties"):
        return None
    return client


def ensure_container() -> str:
    """Create the store if it is missing (a private container: no public access). Idempotent;
    returns what it did, for the command to print."""
    from azure.core.exceptions import ResourceExistsError

    container = _azure_container()
    if container is None:
        root = Path(settings.MEDIA_ROOT)
        existed = root.is_dir()
        root.mkdir(parents=True, exist_ok=True)
        return f"local folder {root} {'exists' if existed else 'created'}"
    try:
        # No SDK retries: its blob backoff starts at 15 s. Compose starts this step only once
        # the store answers its health check.
        container.create_container(retry_total=0)
    except ResourceExistsError:
        return f"container {container.container_name} exists"
    return f"container {container.container_name} created (private)"


def probe() -> str:
    """Raise when the store cannot be used; "ok" otherwise."""
    container = _azure_container()
    if container is None:
        # The local folder is made on the first save anyway; failing to make it is the fault.
        Path(settings.MEDIA_ROOT).mkdir(parents=True, exist_ok=True)
        return "ok"
    # Raises ResourceNotFoundError for a missing container, and on any failure to reach it. No
    # retries: the SDK's default backoff would hold /health for more than a minute.
    container.get_container_properties(retry_total=0, connection_timeout=3, read_timeout=3)
    return "ok"
