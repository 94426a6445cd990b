from django.apps import AppConfig


def _run_project(run_id: str) -> int | None:
    from .models import Run

    return Run.objects.filter(pk=run_id).values_list("project_id", flat=True).first()


def _overview(project, environments: list) -> dict:  # noqa: ANN001
    """Missed recurring runs per environment, for the project overview's notice."""
    from .selectors import missed_runs

    panels: dict[int, dict] = {}
    for run in missed_runs(project.pk)[:50]:
        if run.environment_id is not None:
            panels.setdefault(run.environment_id, {"missed_runs": []})["missed_runs"].append(run)
    return panels


class ChecklistsConfig(AppConfig):
    name = "checklists"
    verbose_name = "Checklists"

    def ready(self) -> None:
        from releasecenter import benchdata, demo, events, overview

        from . import benchdata as checklist_benchdata
        from . import demo as checklist_demo

        events.register_topic("run", _run_project)
        overview.register("checklists", _overview)
        demo.register(checklist_demo.seed)
        benchdata.register(checklist_benchdata.seed)
