from django.urls import include, path

from . import release_views as views

urlpatterns = [
    path("releases/", views.release_list, name="release-list"),
    path("releases/new/", views.release_new, name="release-new"),
    path("releases/<int:release_id>/", views.release_detail, name="release-detail"),
    path("releases/<int:release_id>/edit/", views.release_edit, name="release-edit"),
    path("releases/<int:release_id>/submit/", views.release_submit, name="release-submit"),
    path("releases/<int:release_id>/signoff/", views.release_signoff, name="release-signoff"),
    path(
        "releases/<int:release_id>/signoffs/<int:signoff_id>/withdraw/",
        views.release_withdraw,
        name="release-withdraw",
    ),
    path(
        "releases/<int:release_id>/accept-risk/",
        views.release_accept_risk,
        name="release-accept-risk",
    ),
    path(
        "releases/<int:release_id>/acknowledge/",
        views.release_acknowledge,
        name="release-acknowledge",
    ),
    path("releases/<int:release_id>/cancel/", views.release_cancel, name="release-cancel"),
    path(
        "releases/<int:release_id>/follow-ups/<int:follow_up_id>/resolve/",
        views.release_follow_up,
        name="release-follow-up",
    ),
    path("releases/<int:release_id>/compliance.zip", views.release_bundle, name="release-bundle"),
    path(
        "environments/<str:environment>/policy/",
        views.environment_policy,
        name="environment-policy",
    ),
    path("", include("deployments.jobs_urls")),
]
