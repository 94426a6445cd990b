from django.urls import path

from . import api

urlpatterns = [
    path(
        "projects/<slug:slug>/incidents/",
        api.ProjectIncidentList.as_view(),
        name="api-incidents",
    ),
    path("incidents/<int:pk>/", api.IncidentDetail.as_view(), name="api-incident"),
    path(
        "incidents/<int:pk>/acknowledge/",
        api.AcknowledgeIncident.as_view(),
        name="api-incident-acknowledge",
    ),
    path(
        "incidents/<int:pk>/status/", api.ChangeIncidentStatus.as_view(), name="api-incident-status"
    ),
    path(
        "incidents/<int:pk>/timeline/", api.IncidentTimeline.as_view(), name="api-incident-timeline"
    ),
    path(
        "incidents/<int:pk>/rollback/", api.IncidentRollback.as_view(), name="api-incident-rollback"
    ),
    path(
        "incidents/<int:pk>/postmortem/",
        api.IncidentPostmortem.as_view(),
        name="api-incident-postmortem",
    ),
]
