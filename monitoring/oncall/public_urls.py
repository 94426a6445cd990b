from django.urls import path

from . import views

# Outside any project's prefix: the status page is public.
urlpatterns = [
    path("status/<slug:slug>/", views.status_page, name="status-page"),
    # Signed one-tap acknowledge links from pages; they name the incident, not the project.
    path("oncall/ack/<str:token>/", views.acknowledge_link, name="oncall-ack"),
]
