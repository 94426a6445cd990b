"""Automated checklist items: an item can point at a check that ticks it by itself.

An Item carries ``automation``, a small JSON object whose ``kind`` names a runner, e.g.
``{"kind": "check", "check_id": 12}``. Another app supplies the runner for its kind; the
checklists app knows nothing of health checks, HTTP or anything else the runner does. The
registry lives in the core app so that neither side imports the other (checklists and
monitoring both depend only on releasecenter).

Recipe for adding a kind (e.g. in monitoring/apps.py, inside ``ready()``)::

    from releasecenter import automation

    def run_health_check(run_item) -> automation.AutomationResult:
        check = HealthCheck.objects.get(pk=run_item.item.automation["check_id"])
        result = execute(check)                      # your engine
        return automation.AutomationResult(
            passed=result.ok,
            summary=f"{check.name}: HTTP {result.status} in {result.ms} ms",
            evidence_text=result.response_excerpt,   # stored as the item's evidence
        )

    automation.register("check", run_health_check)

``checklists.services.run_automated_item(actor_or_None, run_item)`` (and the task and the
"Run check" button that call it) runs the runner: when it passes, the item is ticked with
``evidence_text`` as a text evidence record; when it fails or raises, the item stays open and
the failure is shown on it. A runner gets the RunItem (``run_item.item.automation`` holds its
parameters, ``run_item.run.environment`` the environment) and must not change checklist rows
itself; it should bound its own time (the task has a time limit).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# Evidence text is kept, not the whole response: enough to show what was answered.
MAX_EVIDENCE_CHARS = 64 * 1024
MAX_SUMMARY_CHARS = 500


@dataclass(frozen=True)
class AutomationResult:
    passed: bool
    summary: str
    evidence_text: str = ""


Runner = Callable[[Any], AutomationResult]
_runners: dict[str, Runner] = {}


def register(kind: str, runner: Runner) -> None:
    """Make ``runner`` answer for items whose automation has this ``kind``."""
    if not kind or not isinstance(kind, str):
        raise ValueError("An automation kind is a non-empty string.")
    _runners[kind] = runner


def unregister(kind: str) -> None:
    _runners.pop(kind, None)


def kinds() -> list[str]:
    return sorted(_runners)


def runner_for(kind: str) -> Runner | None:
    return _runners.get(kind)


def describe(automation: dict[str, Any] | None) -> str:
    """A short label for the UI, e.g. "check (check_id=12)"."""
    if not automation:
        return ""
    params = ", ".join(f"{k}={v}" for k, v in automation.items() if k != "kind")
    return f"{automation.get('kind', '?')}" + (f" ({params})" if params else "")


def execute(run_item: Any) -> AutomationResult:
    """Call the runner for the item's kind; a missing runner or an exception is a failed result,
    never an exception, so the item always shows what happened."""
    automation = run_item.item.automation or {}
    kind = automation.get("kind", "")
    runner = _runners.get(kind)
    if runner is None:
        return AutomationResult(False, f"No automation of kind '{kind}' is available.")
    try:
        result = runner(run_item)
    except Exception as exc:  # noqa: BLE001 - a broken runner is a failed check, shown to people
        logger.warning("automation %s failed on run item %s: %s", kind, run_item.pk, exc)
        return AutomationResult(False, f"The check could not run: {exc}"[:MAX_SUMMARY_CHARS])
    if not isinstance(result, AutomationResult):
        return AutomationResult(False, f"The '{kind}' runner returned no result.")
    return AutomationResult(
        passed=bool(result.passed),
        summary=(result.summary or ("Passed" if result.passed else "Failed"))[:MAX_SUMMARY_CHARS],
        evidence_text=(result.evidence_text or "")[:MAX_EVIDENCE_CHARS],
    )
