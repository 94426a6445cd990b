"""Builders for the checklist tests: templates from our own fixture runbooks or from Markdown
written in the test, and runs of them. Everything goes through the real services.

The runbooks in ``../shared/runbooks`` (team runbooks and a corpus of public checklists) are an
extra layer: CI has them beside the repository, a fresh clone does not. Tests over them carry
``shared_only`` (or are parametrised with ``shared_param``) and are skipped with
``SHARED_MISSING`` as the reason when the folder is absent; the terminal summary then says that
layer was not run. Every importer feature is also covered by ``fixtures/`` of our own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PAYMENTS = FIXTURES / "payments-release.md"

RUNBOOKS = Path(__file__).resolve().parents[2].parent / "shared" / "runbooks"
COMMERCE = RUNBOOKS / "commerce-production-gates.md"
ELEARNING = RUNBOOKS / "elearning-production-checklist.md"
CORPUS = RUNBOOKS / "corpus"
SHARED_PRESENT = (CORPUS / "TRUTH.tsv").is_file()
SHARED_MISSING = (
    "shared runbooks layer not run: ../shared/runbooks is not beside the repository "
    "(the project's own fixtures still cover every importer feature)"
)
shared_only = pytest.mark.skipif(not SHARED_PRESENT, reason=SHARED_MISSING)


def shared_param(value: Any, id: str) -> Any:  # noqa: A002 - pytest's own word
    """A parameter that needs ../shared: skipped, with the reason, when it is absent."""
    return pytest.param(value, marks=shared_only, id=id)


def truth_rows() -> list[Any]:
    """TRUTH.tsv of the shared corpus as parameters, or one skipped parameter without it."""
    if not SHARED_PRESENT:
        return [shared_param(None, "corpus")]
    import csv

    with (CORPUS / "TRUTH.tsv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [pytest.param(row, id=row["file"][:2]) for row in rows]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001, ARG001
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if isinstance(report.longrepr, tuple) and SHARED_MISSING in str(report.longrepr[2])
    ]
    if skipped:
        terminalreporter.write_line(
            f"NOT RUN: {len(skipped)} test(s) over ../shared/runbooks ({SHARED_MISSING}).",
            yellow=True,
            bold=True,
        )


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
