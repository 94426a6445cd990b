"""External: CI runs the deployment itself and reports it through the API.

Nothing runs on a worker. A pipeline creates the deployment like anyone else
(``POST /api/v1/releases/{id}/deployments/``, which applies the same gate), then reports:

* ``POST /api/v1/deployments/{id}/start``: queued → running;
* ``POST /api/v1/deployments/{id}/steps`` with ``{"service", "kind", "status", "log",
  "progress"}``: a step's state, log lines and replica counts, shown live like a worker's;
* ``POST /api/v1/deployments/{id}/finish`` with ``{"status": "succeeded" | "failed",
  "reason"}``.

Each report counts as a heartbeat; a deployment that stops reporting for longer than the
longest job is failed by the reaper with the reason "no report from CI".
"""

from __future__ import annotations

from .base import Strategy


class ExternalStrategy(Strategy):
    name = "external"
    runs_on_worker = False
