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


GATE_AREAS = [
    # (area, severity marker, a command the gate's items refer to)
    ("Build pipeline", "NO-GO", "make release-build"),
    ("Payment provider keys", "NO-GO", "./bin/check-keys --provider payments"),
    ("Tenant isolation", "NO-GO", "pytest -m isolation"),
    ("Login providers", "CONDITIONAL", "./bin/oauth-smoke --all"),
    ("Stock reservations", "CONDITIONAL", "./bin/load --scenario reserve --users 30"),
    ("Plan limits", "WARNING", "./bin/limits report"),
    ("Search index", "WARNING", "./bin/reindex --dry-run"),
    ("Mail delivery", "CONDITIONAL", "./bin/mail-smoke --to ops"),
    ("Backups", "NO-GO", "./bin/backup verify --latest"),
    ("Dashboards and alerts", "WARNING", "./bin/alerts lint"),
    ("Rollback rehearsal", "NO-GO", "./bin/rollback --rehearse"),
]


def gated_runbook_markdown() -> str:
    """A runbook of 77 items shaped like the gate checklists teams import: eleven gates of seven
    items each, with severity markers in the headings, inline code in item texts, bold labels
    before fenced configuration blocks, notes, nested items and some items ticked in the source.
    The run page benchmark and the run page's size test use it."""
    lines = ["# Production gates", "", "Every gate below is checked before the window opens.", ""]
    for n, (area, severity, command) in enumerate(GATE_AREAS, start=1):
        slug = area.lower().replace(" ", "_")
        lines += [
            f"### Gate {n:02d}: {area} ({severity})",
            "",
            f"**{area} settings:**",
            "```bash",
            f"{slug.upper()}_URL=https://{slug}.internal.example",
            f"{slug.upper()}_TIMEOUT_SECONDS=30",
            "```",
            "",
            f"- [ ] Run `{command}` and keep its output as evidence",
            f"- [ ] `{slug}` settings in production match the reviewed values",
            f"- [{'x' if n % 3 == 0 else ' '}] Owner of {area.lower()} is on call for the window",
            f"- [ ] No open incident mentions {area.lower()}",
            "  - [ ] The status page shows no degraded component",
            f"- [ ] Dashboards for {area.lower()} show normal error rates (< 0.1 %)",
            f"- [ ] Alerts for {area.lower()} route to the on-call rotation",
            "",
        ]
    lines += ["## Sign-off", "", "Technical Lead: ________ Date: ____", ""]
    return "\n".join(lines)
