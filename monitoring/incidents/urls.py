from django.urls import path

from . import views

urlpatterns = [
    path("incidents/", views.incident_list, name="incident-list"),
    path("incidents/new/", views.incident_new, name="incident-new"),
    path("incidents/policy/", views.incident_policy, name="incident-policy"),
    path("incidents/oncall/", views.oncall, name="incident-oncall"),
    path(
        "incidents/suggestions/<int:suggestion_id>/open/",
        views.suggestion_open,
        name="incident-suggestion-open",
    ),
    path(
        "incidents/suggestions/<int:suggestion_id>/dismiss/",
        views.suggestion_dismiss,
        name="incident-suggestion-dismiss",
    ),
    path("incidents/<int:number>/", views.incident_detail, name="incident-detail"),
    path(
        "incidents/<int:number>/acknowledge/",
        views.incident_acknowledge,
        name="incident-acknowledge",
    ),
    path("incidents/<int:number>/status/", views.incident_status, name="incident-status"),
    path("incidents/<int:number>/edit/", views.incident_edit, name="incident-edit"),
    path("incidents/<int:number>/entries/", views.incident_entry, name="incident-entry"),
    path(
        "incidents/<int:number>/entries/<int:entry_id>/edit/",
        views.entry_edit,
        name="incident-entry-edit",
    ),
    path("incidents/<int:number>/rollback/", views.incident_rollback, name="incident-rollback"),
    path(
        "incidents/<int:number>/timeline.md", views.timeline_markdown, name="incident-timeline-md"
    ),
    path(
        "incidents/<int:number>/postmortem/",
        views.incident_postmortem,
        name="incident-postmortem",
    ),
    path(
        "incidents/<int:number>/postmortem.md",
        views.postmortem_markdown,
        name="incident-postmortem-md",
    ),
]
