from django.urls import path

from . import views

# Outside any project's prefix: the status page is public.
urlpatterns = [
    path("status/<slug:slug>/", views.status_page, name="status-page"),
]
