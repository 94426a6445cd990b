from django.urls import path

from . import views

# Under /p/<slug>/oncall/ (included by monitoring.urls).
urlpatterns = [
    path("", views.oncall_index, name="oncall-index"),
    path("schedules/<int:schedule_id>/", views.schedule_calendar, name="oncall-calendar"),
    path("schedules/<int:schedule_id>/overrides/", views.override_add, name="oncall-override-add"),
    path("status-page/", views.status_settings, name="oncall-status-settings"),
]
