"""Pages of deployment jobs (deployments list and detail, environment page), under /p/<slug>/."""

from django.urls import path

from . import jobs_views as views

urlpatterns = [
    path("deployments/", views.deployment_list, name="deployment-list"),
    path("deployments/<int:deployment_id>/", views.deployment_detail, name="deployment-detail"),
    path(
        "deployments/<int:deployment_id>/cancel/",
        views.deployment_cancel,
        name="deployment-cancel",
    ),
    path(
        "deployments/<int:deployment_id>/rollback/",
        views.deployment_rollback,
        name="deployment-rollback",
    ),
    path(
        "deployments/<int:deployment_id>/snapshot.yaml",
        views.deployment_snapshot,
        name="deployment-snapshot",
    ),
    path(
        "releases/<int:release_id>/deploy/<str:environment>/",
        views.deployment_start,
        name="deployment-start",
    ),
    path("environments/<str:environment>/", views.environment_detail, name="environment-detail"),
    path("environments/<str:environment>/lock/", views.environment_lock, name="environment-lock"),
    path(
        "environments/<str:environment>/unlock/",
        views.environment_unlock,
        name="environment-unlock",
    ),
    path(
        "environments/<str:environment>/deploy-target/",
        views.environment_target,
        name="environment-target",
    ),
]
