from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


def _check_project(check_id: str) -> int | None:
    from .models import Check

    return Check.objects.filter(pk=check_id).values_list("project_id", flat=True).first()


def _check_retention(app_configs: object = None, **kwargs: object) -> list[checks.CheckMessage]:
    # Found at start-up rather than the first night the retention task runs.
    from .models import result_retention_days

    try:
        result_retention_days()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="monitoring.E001")]
    return []


def _incident_project(incident_id: str) -> int | None:
    from .models import Incident

    return Incident.objects.filter(pk=incident_id).values_list("project_id", flat=True).first()


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from releasecenter import benchdata, demo, events, fastpaths, overview

        from . import demo as data
        from . import ping, selectors, services

        # Live pages of a check follow "check:<id>"; the stream asks this which project it is.
        checks.register(_check_retention)
        events.register_topic("check", _check_project)
        events.register_topic("incident", _incident_project)
        from releasecenter import incident_hooks

        from .incidents.timeline import CheckSource

        incident_hooks.register("monitoring", CheckSource())
        from .incidents import auto

        # A check turning critical opens or suggests an incident, per the environment's policy.
        events.listen("project", auto.on_project_event)
        from releasecenter import subjects

        from . import subjects as monitoring_subjects

        # Feed lines that name the check, target, incident or postmortem and link to it.
        subjects.register(
            ["check", "target", "incident", "postmortem"], monitoring_subjects.describe_events
        )
        overview.register("monitoring", selectors.overview_panels)
        from .incidents import selectors as incident_selectors

        overview.register("incidents", incident_selectors.overview_panels)
        demo.register(data.seed_demo)
        benchdata.register(data.seed_bench)
        # Checks by state, on /metrics.
        from . import metrics

        metrics.register()
        # On-call: its tasks live beside it (the worker must import them to know them); a new
        # incident pages level 1 at once instead of at the next beat.
        from .oncall import demo as oncall_demo
        from .oncall import tasks as oncall_tasks

        demo.register(oncall_demo.seed_demo)
        events.listen("incident", oncall_tasks.on_incident_event)
        # Heartbeat pings from cron jobs: served before Django's middleware (see ping.py).
        fastpaths.register(ping.PREFIX, ping.application)
        # Automated checklist items of kind "check" run a health check (the registry is the core
        # app's, so monitoring never imports checklists).
        from releasecenter import automation

        automation.register("check", services.run_for_checklist_item)
