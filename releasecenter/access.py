"""Access checks, in one place for pages and API alike.

An object of a project you are not a member of does not exist for you: every lookup goes through
these helpers, which raise Http404 for outsiders and PermissionDenied for members whose role is
too low for the action.
"""

from __future__ import annotations

from typing import TypeVar

from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import Http404

from .models import Membership, Project

M = TypeVar("M", bound=models.Model)


def membership_for(user, project: Project | int) -> Membership | None:  # noqa: ANN001
    if not getattr(user, "is_authenticated", False):
        return None
    project_id = project.pk if isinstance(project, Project) else project
    return Membership.objects.filter(user=user, project_id=project_id).first()


def require_role(membership: Membership, minimum: str) -> None:
    if not membership.has_role(minimum):
        raise PermissionDenied(
            f"This needs the {Membership.Role(minimum).label.lower()} role in the project."
        )


def project_for(
    user, slug: str, minimum: str = Membership.Role.VIEWER
) -> tuple[Project, Membership]:  # noqa: ANN001
    """The project with this slug and the user's membership, or 404 for an outsider."""
    if not getattr(user, "is_authenticated", False):
        raise Http404("No such project.")
    membership = (
        Membership.objects.select_related("project").filter(user=user, project__slug=slug).first()
    )
    if membership is None:
        raise Http404("No such project.")
    require_role(membership, minimum)
    return membership.project, membership


def object_for(
    user,  # noqa: ANN001
    queryset: models.QuerySet[M],
    *,
    project_field: str = "project",
    minimum: str = Membership.Role.VIEWER,
    **lookup,  # noqa: ANN003
) -> tuple[M, Membership]:
    """An object whose project the user belongs to, with that membership; else 404."""
    if not getattr(user, "is_authenticated", False):
        raise Http404("Not found.")
    obj = queryset.filter(**{f"{project_field}__memberships__user": user}, **lookup).first()
    if obj is None:
        raise Http404("Not found.")
    project_id = getattr(obj, f"{project_field}_id") if "__" not in project_field else None
    if project_id is None:
        # Follow the path (e.g. "release__project") to the project.
        target = obj
        for part in project_field.split("__"):
            target = getattr(target, part)
        project_id = target.pk
    membership = Membership.objects.get(user=user, project_id=project_id)
    require_role(membership, minimum)
    return obj, membership


def user_projects(user) -> models.QuerySet[Project]:  # noqa: ANN001
    if not getattr(user, "is_authenticated", False):
        return Project.objects.none()
    return Project.objects.filter(memberships__user=user)
