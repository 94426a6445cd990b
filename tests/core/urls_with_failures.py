"""The project's URLs plus views that fail on purpose, for the error-response tests."""

from django.urls import path

from releasecenter import urls as project_urls

# Django looks the error handlers up on the root URLconf module: the project's own.
handler400 = project_urls.handler400
handler403 = project_urls.handler403
handler404 = project_urls.handler404
handler500 = project_urls.handler500


def broken(request):  # noqa: ANN001, ANN201
    raise RuntimeError("a bug in a view")


urlpatterns = [
    path("api/v1/broken/", broken),
    path("broken/", broken),
    *project_urls.urlpatterns,
]
