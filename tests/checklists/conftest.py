"""Builders for the checklist tests: templates from the shared runbooks or from Markdown written
in the test, and runs of them. Everything goes through the real services."""

from __future__ import annotations

from pathlib import Path

import pytest

RUNBOOKS = Path(__file__).resolve().parents[2].parent / "shared" / "runbooks"
COMMERCE = RUNBOOKS / "commerce-production-gates.md"
ELEARNING = RUNBOOKS / "elearning-production-checklist.md"


def runbook_with(items: int, sections: int = 1, title: str = "Generated runbook") -> str:
    """Markdown with ``items`` task lines spread over ``sections`` sections."""
    lines = [f"# {title}", ""]
    per = max(1, items // sections)
    made = 0
    for s in range(sections):
        lines += [f"## Section {s + 1}", ""]
        count = per if s < sections - 1 else items - made
        for i in range(count):
            lines.append(f"- [ ] Step {made + i + 1}")
        made += count
        lines.append("")
    return "\n".join(lines)


@pytest.fixture
def make_template(personas):  # noqa: ANN001, ANN201
    from checklists import services

    def make(markdown: str | None = None, *, name: str | None = None, items: int = 5, **kw):  # noqa: ANN003, ANN202
        text = markdown if markdown is not None else runbook_with(items)
        return services.import_runbook(personas.member, personas.project, text, name=name, **kw)

    return make


@pytest.fixture
def make_run(personas, make_template):  # noqa: ANN001, ANN201
    from checklists import services

    def make(markdown: str | None = None, *, items: int = 5, **kw):  # noqa: ANN003, ANN202
        template = make_template(markdown, items=items).template
        return services.create_run(personas.member, template, environment=personas.staging, **kw)

    return make
