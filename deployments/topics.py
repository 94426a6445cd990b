"""Live-event topics of this app and the project each belongs to (for the stream's access check)."""

from .models import Deployment, Release


def release_project_id(release_id: str) -> int | None:
    return Release.objects.filter(pk=release_id).values_list("project_id", flat=True).first()


def deployment_project_id(deployment_id: str) -> int | None:
    return Deployment.objects.filter(pk=deployment_id).values_list("project_id", flat=True).first()
