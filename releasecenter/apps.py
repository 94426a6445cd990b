from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "releasecenter"
    label = "releasecenter"
    verbose_name = "Release Center"

    def ready(self) -> None:
        from . import events, worker_heartbeat

        events.register_topic("project", events.project_topic_resolver)
        worker_heartbeat.connect_signals()
