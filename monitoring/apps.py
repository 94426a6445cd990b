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
        overview.register("monitoring", selectors.overview_panels)
        demo.register(data.seed_demo)
        benchdata.register(data.seed_bench)
        # Heartbeat pings from cron jobs: served before Django's middleware (see ping.py).
        fastpaths.register(ping.PREFIX, ping.application)
        try:
            from checklists import automation
        except ImportError:  # the checklists app predates automated items
            return
        automation.register("check", services.run_for_checklist_item)
