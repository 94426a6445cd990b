from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from . import api, health, metrics, stream, views

# The app's own error pages (JSON for API clients); see errors.py for why they are not Django's.
handler400 = "releasecenter.errors.bad_request"
handler403 = "releasecenter.errors.permission_denied"
handler404 = "releasecenter.errors.page_not_found"
handler500 = "releasecenter.errors.server_error"

api_v1 = [
    path("projects/", api.ProjectList.as_view(), name="api-projects"),
    path("projects/<slug:slug>/", api.ProjectDetail.as_view(), name="api-project"),
    path(
        "projects/<slug:slug>/environments/",
        api.EnvironmentList.as_view(),
        name="api-environments",
    ),
    path("projects/<slug:slug>/services/", api.ServiceList.as_view(), name="api-services"),
    path("projects/<slug:slug>/members/", api.MemberList.as_view(), name="api-members"),
    path("tokens/", api.TokenList.as_view(), name="api-tokens"),
    path("tokens/<int:pk>/", api.TokenRevoke.as_view(), name="api-token-revoke"),
    path("", include("checklists.api_urls")),
    path("", include("deployments.api_urls")),
    path("", include("monitoring.api_urls")),
]

urlpatterns = [
    path("", views.project_list, name="project-list"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("tokens/", views.api_tokens, name="token-list"),
    path("tokens/<int:token_id>/revoke/", views.revoke_api_token, name="token-revoke"),
    path("p/<slug:slug>/", views.project_overview, name="project-overview"),
    path("p/<slug:slug>/announce/", views.post_announcement, name="project-announce"),
    path("p/<slug:slug>/settings/", views.project_settings, name="project-settings"),
    path(
        "p/<slug:slug>/settings/members/<int:member_id>/remove/",
        views.remove_member,
        name="project-member-remove",
    ),
    path("p/<slug:slug>/", include("checklists.urls")),
    path("p/<slug:slug>/", include("deployments.urls")),
    path("p/<slug:slug>/", include("monitoring.urls")),
    path("", include("monitoring.oncall.public_urls")),
    path("events/stream", stream.event_stream, name="events-stream"),
    path("health", health.health_view, name="health"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("admin/", admin.site.urls),
]
