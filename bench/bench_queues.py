"""Health checks keep their schedule while every deployment worker is busy with long rollouts.

A deployment worker pool (two processes, queue ``deployments``) is saturated with four 60-second
rollouts to the simulated cluster (two run, two wait). Meanwhile 30 health checks, every 10 s and
spread over the interval, are claimed when due (here every 0.2 s, as a beat with a fine
interval would; the real beat claims every 5 s, which adds up to 5 s) and run by the checks
worker (queue ``checks``) against a target on 127.0.0.1. Lateness of a run = when it started -
the slot it was due at. Goal: p95 <= 1 s, and no slot missed.

``--shared`` runs the same load the way it ran before the queues were split (one worker pool of
two processes taking every queue) to show what the split buys.

    .venv/bin/python bench/bench_queues.py [--seconds 45] [--checks 30] [--shared]

Needs PostgreSQL and Redis (see bench/README.md); it makes its own project each time.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import stack  # noqa: E402

stack.run_prefix("bench-queues")

import django  # noqa: E402

django.setup()

from django.db import close_old_connections  # noqa: E402
from django.utils import timezone  # noqa: E402

from deployments.models import Deployment  # noqa: E402
from deployments.sim import serve  # noqa: E402
from monitoring import services as monitoring  # noqa: E402
from monitoring.lib.testing import TargetServer  # noqa: E402
from monitoring.models import Check, CheckResult, EnvironmentMonitoring  # noqa: E402
from releasecenter.models import Membership  # noqa: E402

INTERVAL = 10
LATENESS_BUDGET_S = 1.0
ROLLOUTS = 4


def dispatch(stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            monitoring.claim_due_checks()
        finally:
            close_old_connections()
        stop.wait(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--checks", type=int, default=30)
    parser.add_argument("--shared", action="store_true", help="one pool for every queue (before)")
    args = parser.parse_args()

    people = stack.make_project("bench-queues", services=2)
    sim = serve(rollout_seconds=60, progress_deadline_seconds=600)
    environments = [stack.add_environment(people, f"stage{i}") for i in range(ROLLOUTS)]
    for i, environment in enumerate(environments):
        stack.point_at_cluster(people, environment, sim, f"ns{i}")
    processes = stack.Stack()
    stop = threading.Event()
    with TargetServer() as target:
        try:
            EnvironmentMonitoring.objects.update_or_create(
                environment=people.environment, defaults={"allow_list": "127.0.0.1"}
            )
            m = Membership.objects.get(user=people.engineer, project=people.project)
            checks = [
                monitoring.create_check(
                    people.engineer,
                    m,
                    environment=people.environment,
                    name=f"check {i}",
                    url=target.url("/ok"),
                    interval_seconds=INTERVAL,
                )
                for i in range(args.checks)
            ]
            if args.shared:
                processes.worker(
                    "shared", ("deployments", "checks", "notifications", "default"), concurrency=2
                )
                print("one worker pool of 2 processes on every queue (as before the split)")
            else:
                processes.worker("deployments", ("deployments",), concurrency=2)
                processes.worker("checks", ("checks",), concurrency=2)
                processes.worker("rest", ("notifications", "default"))
                print("deployments: 2 processes; checks: 2 processes; notifications+default: 1")
            release = stack.approved_release(people, "2.0.0")
            deployments = [stack.deploy(people, release, env) for env in environments]
            deadline = time.monotonic() + 60
            while (
                Deployment.objects.filter(
                    pk__in=[d.pk for d in deployments], status="running"
                ).count()
                < 2
            ):
                if time.monotonic() > deadline:
                    print("FAIL: the rollouts did not start")
                    return 1
                time.sleep(0.2)
            print(f"{ROLLOUTS} rollouts of 60 s queued; 2 running: the deployment pool is full")

            # Slots from now on, spread over the interval.
            anchor = timezone.now() + timedelta(seconds=1)
            slots = {}
            for i, check in enumerate(checks):
                slots[check.pk] = anchor + timedelta(seconds=INTERVAL * i / len(checks))
                Check.objects.filter(pk=check.pk).update(next_run_at=slots[check.pk])
            dispatcher = threading.Thread(target=dispatch, args=(stop,), daemon=True)
            dispatcher.start()
            time.sleep(args.seconds)
            stop.set()
            dispatcher.join()
            window_end = anchor + timedelta(seconds=args.seconds)
            running = Deployment.objects.filter(
                pk__in=[d.pk for d in deployments], status__in=["running", "queued"]
            ).count()
        finally:
            stop.set()
            processes.stop()
            sim.stop()

    lateness = []
    expected = 0
    ran = 0
    for check in checks:
        first = slots[check.pk]
        due = []
        slot = first
        while slot < window_end - timedelta(seconds=INTERVAL / 2):
            due.append(slot)
            slot += timedelta(seconds=INTERVAL)
        expected += len(due)
        started = list(
            CheckResult.objects.filter(health_check=check, started_at__gte=first).values_list(
                "started_at", flat=True
            )
        )
        for slot in due:
            runs = [s for s in started if slot <= s < slot + timedelta(seconds=INTERVAL)]
            if runs:
                ran += 1
                lateness.append((min(runs) - slot).total_seconds())
    p95 = stack.percentile(lateness, 0.95)
    print(
        f"while {running} of {ROLLOUTS} deployments were still queued or running: "
        f"{ran} of {expected} slots ran; lateness p50 {stack.percentile(lateness, 0.5):.2f} s, "
        f"p95 {p95:.2f} s, max {max(lateness, default=float('nan')):.2f} s"
    )
    late = sorted(lateness)[-5:]
    print(f"latest five: {', '.join(f'{x:.2f}' for x in late)} s; machine load {os.getloadavg()}")
    ok = ran == expected and p95 <= LATENESS_BUDGET_S
    print(f"{'PASS' if ok else 'FAIL'}: every slot ran, lateness p95 <= {LATENESS_BUDGET_S} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
