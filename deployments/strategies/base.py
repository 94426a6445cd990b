"""The interface every deployment strategy implements, and the plan it works from.

A strategy knows how to change one kind of environment; the runner (deployments/runner.py) knows
the order of things: tiers, steps, heartbeats, cancellation, verification, rollback, and every
database write. A strategy never touches the database: it gets plain ``ServicePlan`` objects,
reports progress and log lines through a ``Reporter``, and returns an ``Outcome`` per service.
That keeps strategies testable against their target alone and lets the runner batch its writes.

Adding a strategy
-----------------
1. Write ``deployments/strategies/<name>.py`` with a ``Strategy`` subclass: set ``name`` and
   implement ``snapshot``, ``apply``, ``wait`` and ``undo`` (each takes the plans of one tier, so
   a strategy may work on them in parallel). Raise nothing for a service that fails: return
   ``Outcome(False, message)`` for it; raise ``StrategyError`` only when the whole target is
   unusable (bad credentials, unreachable API).
2. Add the name to ``DeployTarget.Strategy`` (deployments/models/jobs.py, plus a migration) and
   to ``STRATEGIES`` in ``deployments/strategies/__init__.py``.
3. If it needs settings of its own, add fields to ``DeployTarget`` (secrets as
   ``EncryptedTextField``, never rendered back) and to the form on the environment page.
4. Test it against a real server on 127.0.0.1 (see tests/deployments/test_strategies.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


def outside_event_loop(call: Callable[[], T]) -> T:
    """Run a blocking call that starts its own event loop (asyncio.run), from a thread that has
    none. A Celery worker's thread has none; a caller inside a running loop (a test driving a
    browser, a management command under an async server) gets the call run on a helper thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


class StrategyError(Exception):
    """The target as a whole cannot be used (credentials, configuration, unreachable API)."""


class Aborted(Exception):  # noqa: N818 - a control-flow signal, not an error to report
    """The runner asked to stop (the job was taken from this worker)."""


@dataclass
class ServicePlan:
    """What to do with one service, and what was learnt about it on the way."""

    service_name: str
    tier: int
    # The name of the object in the target (the Kubernetes Deployment), usually the service's.
    target_name: str
    # The version (image tag) it runs once this deployment is done, as its health endpoint
    # will report it; for a rollback it is learnt from the revision restored.
    version: str
    health_url: str = ""
    # For a rollback: what the undone deployment found before it changed anything.
    undo_to_revision: str = ""
    undo_to_image: str = ""
    undo_to_version: str = ""
    # Learnt by snapshot and apply; the runner records them on the steps.
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    ok: bool
    message: str = ""
    facts: dict[str, Any] = field(default_factory=dict)


class Reporter(Protocol):
    """How a strategy tells the runner what it sees while it works."""

    def progress(self, plan: ServicePlan, desired: int, updated: int, available: int) -> None: ...

    def log(self, plan: ServicePlan | None, text: str) -> None: ...

    def check(self) -> None:
        """Raise Aborted if the job was taken away; call it while waiting."""


@dataclass
class Snapshot:
    """The state of the target before applying: a document to keep, and per-service outcomes."""

    document: str
    content_type: str
    outcomes: dict[str, Outcome]


class Strategy:
    """One kind of target. Instances live for one job and hold no database objects."""

    name = ""
    # False for strategies whose work happens elsewhere (reported through the API).
    runs_on_worker = True

    def close(self) -> None:
        """Release connections; called once when the job is done."""

    def snapshot(self, plans: Sequence[ServicePlan]) -> Snapshot:
        raise NotImplementedError

    def apply(self, plans: Sequence[ServicePlan], reporter: Reporter) -> dict[str, Outcome]:
        raise NotImplementedError

    def wait(
        self, plans: Sequence[ServicePlan], reporter: Reporter, timeout: float
    ) -> dict[str, Outcome]:
        raise NotImplementedError

    def undo(self, plans: Sequence[ServicePlan], reporter: Reporter) -> dict[str, Outcome]:
        raise NotImplementedError


StrategyFactory = Callable[[Any], Strategy]
