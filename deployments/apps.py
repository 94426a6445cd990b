from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"

    def ready(self) -> None:
        from releasecenter import demo as core_demo
        from releasecenter import events

        from . import demo, topics
        from .services import releases

        events.register_topic("release", topics.release_project_id)
        # A tick on an attached checklist run can approve (or un-approve) a release.
        events.listen("run", releases.on_run_event)
        core_demo.register(demo.seed)
        # Deployment jobs: their live topic, the demo's simulated cluster, the overview panel.
        from releasecenter import overview

        from . import jobs_demo, jobs_views

        events.register_topic("deployment", topics.deployment_project_id)
        core_demo.register(jobs_demo.seed)
        overview.register("deployments", jobs_views.overview_panels)
        # Incidents (in monitoring) see deployments, their steps and rollbacks through this.
        from releasecenter import incident_hooks

        from .incident_source import DeploymentIncidentSource, on_deployment_event

        incident_hooks.register("deployments", DeploymentIncidentSource())
        # A failed verification or an automatic rollback opens or suggests an incident.
        events.listen("deployment", on_deployment_event)
        from releasecenter import subjects

        from . import incident_demo
        from . import subjects as deployment_subjects

        # Feed lines that name the deployment, release or environment and link to it.
        subjects.register(
            ["deployment", "release", "environment"], deployment_subjects.describe_events
        )

        core_demo.register(incident_demo.seed)
