from django.urls import include, path

from . import api

urlpatterns = [
    path("projects/<slug:slug>/checks/", api.ProjectCheckList.as_view(), name="api-checks"),
    path("projects/<slug:slug>/suites/", api.ProjectSuiteList.as_view(), name="api-suites"),
    path(
        "projects/<slug:slug>/environments/<str:name>/monitoring/",
        api.EnvironmentMonitoringDetail.as_view(),
        name="api-environment-monitoring",
    ),
    path("checks/<int:pk>/", api.CheckDetail.as_view(), name="api-check"),
    path("checks/<int:pk>/run", api.RunCheck.as_view(), name="api-check-run"),
    path("checks/<int:pk>/results/", api.CheckResults.as_view(), name="api-check-results"),
    path("suites/<int:pk>/", api.SuiteDetail.as_view(), name="api-suite"),
    path("suites/<int:pk>/run", api.RunSuite.as_view(), name="api-suite-run"),
    path("suites/<int:pk>/results/", api.SuiteResults.as_view(), name="api-suite-results"),
    path("", include("monitoring.incidents.api_urls")),
    path("", include("monitoring.oncall.api_urls")),
]
