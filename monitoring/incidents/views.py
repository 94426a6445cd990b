"""Incident pages. Thin: services write, selectors read."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from releasecenter.access import project_for
from releasecenter.models import Membership

from .models import Incident


def incident_for(request, slug: str, number: int, minimum: str = Membership.Role.VIEWER):  # noqa: ANN001, ANN201
    """The incident and the user's membership; another project's incident is a 404."""
    project, membership = project_for(request.user, slug, minimum)
    incident = (
        Incident.objects.select_related("project", "commander", "acknowledged_by")
        .filter(project=project, number=number)
        .first()
    )
    if incident is None:
        raise Http404("No such incident.")
    request.project = project
    return incident, membership


@login_required
@require_GET
def incident_list(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug)
    request.project = project
    incidents = Incident.objects.filter(project=project).select_related("commander")[:100]
    return render(
        request,
        "monitoring/incidents/list.html",
        {"project": project, "membership": membership, "incidents": incidents},
    )


@login_required
@require_GET
def incident_detail(request, slug: str, number: int):  # noqa: ANN001, ANN201
    incident, membership = incident_for(request, slug, number)
    return render(
        request,
        "monitoring/incidents/detail.html",
        {"project": incident.project, "membership": membership, "incident": incident},
    )
