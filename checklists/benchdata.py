"""The checklists part of `generate_benchmark_data`: per project, a runbook template with 100
items in ten sections (gates among them) and one open run of it on staging."""

from __future__ import annotations

from releasecenter.models import Project


def runbook_markdown(sections: int = 10, items_per_section: int = 10, title: str = "") -> str:
    """A synthetic runbook: phases, severities, sub-items and a command per section."""
    severities = ["", " (WARNING)", " (CONDITIONAL)", " (NO-GO)"]
    phases = ["T-1 day", "T-2 hours", "T-30 minutes", "T-0", "T+15 minutes", "T+1 hour"]
    lines = [f"# {title or 'Benchmark runbook'}", ""]
    for s in range(sections):
        lines += [
            f"## Step group {s + 1} ({phases[s % len(phases)]}){severities[s % 4]}",
            "",
            f"Notes for group {s + 1}: who does what, and where to look when it goes wrong.",
            "",
        ]
        for i in range(items_per_section):
            lines.append(f"- [ ] Check number {i + 1} of group {s + 1} is confirmed and recorded")
        lines += ["", "```bash", f"./scripts/verify --group {s + 1}", "```", ""]
    lines += ["## Sign-off", "", "Technical Lead: ________ Date: ____", ""]
    return "\n".join(lines)


def seed(projects: list[Project]) -> None:
    from . import services

    for project in projects:
        outcome = services.import_runbook(
            None, project, runbook_markdown(), name="Benchmark runbook", kind="deployment-day"
        )
        staging = project.environments.filter(name="staging").first()
        services.create_run(None, outcome.template, environment=staging, title="Benchmark run")
