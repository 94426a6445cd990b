"""API of deployment jobs, under /api/v1/."""

from django.urls import path

from . import jobs_api as api

urlpatterns = [
    path(
        "releases/<int:release_id>/deployments/",
        api.ReleaseDeployments.as_view(),
        name="api-release-deployments",
    ),
    path(
        "projects/<slug:slug>/deployments/",
        api.ProjectDeployments.as_view(),
        name="api-project-deployments",
    ),
    path("deployments/<int:pk>/", api.DeploymentDetail.as_view(), name="api-deployment"),
    path(
        "deployments/<int:pk>/rollback/",
        api.DeploymentRollback.as_view(),
        name="api-deployment-rollback",
    ),
    path(
        "deployments/<int:pk>/cancel/", api.DeploymentCancel.as_view(), name="api-deployment-cancel"
    ),
    path("deployments/<int:pk>/start/", api.ExternalStart.as_view(), name="api-deployment-start"),
    path("deployments/<int:pk>/steps/", api.ExternalStep.as_view(), name="api-deployment-steps"),
    path(
        "deployments/<int:pk>/finish/", api.ExternalFinish.as_view(), name="api-deployment-finish"
    ),
    path(
        "projects/<slug:slug>/environments/<str:name>/lock/",
        api.EnvironmentLockView.as_view(),
        name="api-environment-lock",
    ),
    path(
        "projects/<slug:slug>/environments/<str:name>/deploy-target/",
        api.DeployTargetView.as_view(),
        name="api-environment-deploy-target",
    ),
]
