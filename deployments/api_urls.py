from django.urls import include, path

from . import release_api

urlpatterns = [
    path("projects/<slug:slug>/releases/", release_api.ReleaseList.as_view(), name="api-releases"),
    path("releases/<int:pk>/", release_api.ReleaseDetail.as_view(), name="api-release"),
    path(
        "releases/<int:pk>/signoffs/",
        release_api.SignoffList.as_view(),
        name="api-release-signoffs",
    ),
    path(
        "releases/<int:pk>/decision",
        release_api.DecisionView.as_view(),
        name="api-release-decision",
    ),
    path("", include("deployments.jobs_api_urls")),
]
