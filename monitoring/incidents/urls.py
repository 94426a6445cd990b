from django.urls import path

from . import views

urlpatterns = [
    path("incidents/", views.incident_list, name="incident-list"),
    path("incidents/<int:number>/", views.incident_detail, name="incident-detail"),
]
