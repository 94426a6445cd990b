from django.urls import include, path

from . import views

urlpatterns = [
    path("health/", views.health_index, name="health-index"),
    path("health/checks/", views.check_list, name="check-list"),
    path("health/checks/new/", views.check_new, name="check-new"),
    path("health/suites/new/", views.suite_new, name="suite-new"),
    path("health/checks/<int:check_id>/", views.check_detail, name="check-detail"),
    path("health/checks/<int:check_id>/edit/", views.check_edit, name="check-edit"),
    path("health/checks/<int:check_id>/delete/", views.check_delete, name="check-delete"),
    path("health/checks/<int:check_id>/run/", views.check_run, name="check-run"),
    path("health/checks/<int:check_id>/steps/new/", views.step_new, name="step-new"),
    path(
        "health/environments/<str:name>/",
        views.environment_monitoring,
        name="environment-monitoring",
    ),
    path(
        "health/environments/<str:name>/targets/<int:target_id>/delete/",
        views.target_delete,
        name="target-delete",
    ),
    path("", include("monitoring.incidents.urls")),
    path("oncall/", include("monitoring.oncall.urls")),
]
