from django.urls import path

from . import api

urlpatterns = [
    path("projects/<slug:slug>/schedules/", api.ScheduleList.as_view(), name="api-schedules"),
    path(
        "projects/<slug:slug>/schedules/<int:pk>/overrides/",
        api.OverrideList.as_view(),
        name="api-schedule-overrides",
    ),
    path("projects/<slug:slug>/oncall/", api.OnCallNow.as_view(), name="api-oncall"),
    path(
        "projects/<slug:slug>/escalation-policy/",
        api.EscalationPolicyDetail.as_view(),
        name="api-escalation-policy",
    ),
    # The incidents' SLA clocks in seconds (stored by their severity policy).
    path(
        "projects/<slug:slug>/severity-policy/",
        api.SeverityPolicyDetail.as_view(),
        name="api-severity-policy",
    ),
    path(
        "projects/<slug:slug>/notification-channels/",
        api.ChannelList.as_view(),
        name="api-notification-channels",
    ),
]
