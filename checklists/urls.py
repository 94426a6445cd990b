"""Checklist pages, under /p/<slug>/ (see releasecenter/urls.py)."""

from django.urls import path

from . import views

urlpatterns = [
    path("checklists/", views.checklist_list, name="checklist-list"),
    path("checklists/new/", views.checklist_new, name="checklist-new"),
    path("checklists/import/", views.checklist_import, name="checklist-import"),
    path(
        "checklists/templates/<int:template_id>/",
        views.template_detail,
        name="checklist-template",
    ),
    path(
        "checklists/templates/<int:template_id>/v<int:number>/",
        views.template_detail,
        name="checklist-template-version",
    ),
    path(
        "checklists/templates/<int:template_id>/export.md",
        views.template_export,
        name="checklist-template-export",
    ),
    path(
        "checklists/templates/<int:template_id>/edit/<str:what>/",
        views.template_edit,
        name="checklist-template-edit",
    ),
    path(
        "checklists/templates/<int:template_id>/op/",
        views.template_operation,
        name="checklist-template-op",
    ),
    path(
        "checklists/templates/<int:template_id>/runs/",
        views.run_start,
        name="checklist-run-start",
    ),
    path(
        "checklists/templates/<int:template_id>/schedules/",
        views.schedule_add,
        name="checklist-schedule-add",
    ),
    path(
        "checklists/schedules/<int:schedule_id>/<str:action>/",
        views.schedule_action,
        name="checklist-schedule-action",
    ),
    path("checklists/runs/", views.run_list, name="checklist-runs"),
    path("checklists/runs/<int:run_id>/", views.run_detail, name="checklist-run"),
    path("checklists/runs/<int:run_id>/report.json", views.run_report, name="checklist-run-report"),
    path(
        "checklists/runs/<int:run_id>/items/<int:item_id>/",
        views.run_item_state,
        name="checklist-run-item",
    ),
    path(
        "checklists/runs/<int:run_id>/items/<int:item_id>/forms/",
        views.run_item_forms,
        name="checklist-run-item-forms",
    ),
    path(
        "checklists/runs/<int:run_id>/items/<int:item_id>/<str:action>/",
        views.run_item_action,
        name="checklist-run-item-action",
    ),
    path(
        "checklists/runs/<int:run_id>/evidence/<int:evidence_id>/",
        views.evidence_download,
        name="checklist-evidence",
    ),
    path(
        "checklists/runs/<int:run_id>/evidence/<int:evidence_id>/delete/",
        views.evidence_delete,
        name="checklist-evidence-delete",
    ),
]
