"""Helpers shared by the pages of every app."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from .access import project_for

SECTION_HINTS = {
    "Releases": "Releases created here or by CI through the API will be listed here.",
    "Checklists": "Runbook templates and their live runs will be listed here.",
    "Deployments": "Deployments run by the workers will be listed here, newest first.",
    "Health": "Health checks and smoke suites per environment and service will show here.",
    "Incidents": "Incidents with their severities, SLA timers and timelines will show here.",
}


@login_required
def section_placeholder(request, slug: str, section: str):  # noqa: ANN001, ANN201
    """An empty state for a section of the project with nothing in it yet."""
    project, membership = project_for(request.user, slug)
    request.project = project
    return render(
        request,
        "releasecenter/section_empty.html",
        {"project": project, "section": section, "hint": SECTION_HINTS.get(section, "")},
    )
