"""Checklist API routes, included under /api/v1/ (see releasecenter/urls.py)."""

from django.urls import path, re_path

from . import api

P = "projects/<slug:slug>"

urlpatterns = [
    path(f"{P}/checklist-templates/", api.TemplateList.as_view(), name="api-checklist-templates"),
    # The documented address has no trailing slash; accept one too.
    re_path(
        r"^projects/(?P<slug>[-a-zA-Z0-9_]+)/checklist-templates/import/?$",
        api.TemplateImport.as_view(),
        name="api-checklist-import",
    ),
    path(
        f"{P}/checklist-templates/<int:pk>/",
        api.TemplateDetail.as_view(),
        name="api-checklist-template",
    ),
    path(
        f"{P}/checklist-templates/<int:pk>/export",
        api.TemplateExport.as_view(),
        name="api-checklist-template-export",
    ),
    path(f"{P}/checklist-runs/", api.RunList.as_view(), name="api-checklist-runs"),
    path(f"{P}/checklist-runs/<int:pk>/", api.RunDetail.as_view(), name="api-checklist-run"),
    path(
        f"{P}/checklist-runs/<int:pk>/report",
        api.RunReport.as_view(),
        name="api-checklist-run-report",
    ),
    path(
        f"{P}/checklist-runs/<int:pk>/items/<int:item_id>/",
        api.RunItemChange.as_view(),
        name="api-checklist-run-item",
    ),
    path(
        f"{P}/checklist-runs/<int:pk>/items/<int:item_id>/evidence",
        api.RunItemEvidence.as_view(),
        name="api-checklist-run-item-evidence",
    ),
    path(
        f"{P}/checklist-runs/<int:pk>/items/<int:item_id>/automation",
        api.RunItemAutomation.as_view(),
        name="api-checklist-run-item-automation",
    ),
]
