"""Drill: kill -9 the worker running a deployment, again and again, at random moments.

Two uvicorn processes, two Celery workers (each on every queue, one job at a time) and a real beat
on one PostgreSQL and Redis, deploying to a simulated cluster (its own threads here) with
automatic rollback on. Each round deploys a new version, waits for a worker to run it, and at a
random moment of its rollout kills that worker with SIGKILL, then starts a replacement. Every
deployment must leave ``running`` within the heartbeat TTL plus one reap interval (beat runs the
reaper every 15 s) and end ``succeeded``, ``failed`` (worker lost) or ``rolled_back``; no job may
stay running; and the cluster must run what the database says runs.

    .venv/bin/python drills/kill_deployment_worker.py [--rounds 20] [--ttl 5]

Needs PostgreSQL and Redis (see bench/README.md); it makes its own project each time.
"""

from __future__ import annotations

import argparse
import collections
import random
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import stack  # noqa: E402

stack.run_prefix("drill-kill")

import django  # noqa: E402

django.setup()

from deployments import services  # noqa: E402
from deployments.models import DeployedVersion, Deployment  # noqa: E402
from deployments.sim import serve  # noqa: E402
from releasecenter.models import Membership  # noqa: E402

REAP_INTERVAL = 15.0  # releasecenter/schedule.py, "deployments-reap"
FINAL = {"succeeded", "failed", "rolled_back", "cancelled"}
ALL_QUEUES = ("deployments", "checks", "notifications", "default")


class Workers:
    def __init__(self, processes: stack.Stack, ttl: str) -> None:
        self.processes, self.ttl = processes, ttl
        self.by_name: dict[str, object] = {}
        self.started = 0

    def start(self) -> None:
        name = f"w{self.started}"
        self.started += 1
        self.by_name[name] = self.processes.worker(
            name, ALL_QUEUES, DEPLOYMENT_HEARTBEAT_TTL_SECONDS=self.ttl
        )

    def owner_of(self, deployment: Deployment):  # noqa: ANN201
        for name, proc in self.by_name.items():
            if deployment.owner.startswith(f"{name}-"):
                return name, proc
        return None, None


def active(project) -> list[Deployment]:  # noqa: ANN001
    return list(Deployment.objects.filter(project=project).exclude(status__in=FINAL).order_by("pk"))


def cluster_matches(sim, people: stack.People, namespace: str) -> list[str]:  # noqa: ANN001
    wrong = []
    recorded = {
        row.service.name: row.image
        for row in DeployedVersion.objects.filter(environment=people.environment).select_related(
            "service"
        )
    }
    for service in people.project.services.all():
        running = sim.get("deployments", namespace, service.name)["spec"]["template"]["spec"][
            "containers"
        ][0]["image"]
        if recorded.get(service.name) not in (None, running):
            wrong.append(f"{service.name}: cluster {running}, database {recorded[service.name]}")
    return wrong


def main() -> int:  # noqa: C901, PLR0915
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--ttl", type=int, default=5, help="DEPLOYMENT_HEARTBEAT_TTL_SECONDS")
    parser.add_argument("--rollout", type=float, default=2.0, help="seconds per service rollout")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)  # noqa: S311 - moments to kill at, not secrets
    bound = args.ttl + REAP_INTERVAL
    people = stack.make_project("drill-kill", services=2)
    namespace = "drill"
    sim = serve(rollout_seconds=args.rollout, progress_deadline_seconds=120)
    stack.point_at_cluster(people, people.environment, sim, namespace)
    admin_m = Membership.objects.get(user=people.admin, project=people.project)
    services.update_policy(people.admin, admin_m, people.environment, auto_rollback=True)
    processes = stack.Stack()
    workers = Workers(processes, str(args.ttl))
    outcomes: collections.Counter = collections.Counter()
    left_running: list[float] = []
    to_final: list[float] = []
    late, stuck, mismatched, finished_first = [], [], [], 0
    try:
        processes.web()
        processes.web()
        workers.start()
        workers.start()
        processes._start(  # noqa: SLF001
            [sys.executable, "-m", "celery", "-A", "releasecenter", "beat", "--loglevel=WARNING"]
            + ["-s", f"/tmp/drill-kill-beat-{stack.os.getpid()}"],  # noqa: S108
            DEPLOYMENT_HEARTBEAT_TTL_SECONDS=str(args.ttl),
        )
        print(
            f"2 web processes, 2 workers, beat; heartbeat TTL {args.ttl} s, reap every "
            f"{REAP_INTERVAL:.0f} s: each deployment must leave running within {bound:.0f} s"
        )
        round_no = 0
        while len(left_running) < args.kills and round_no < 3 * args.kills:
            round_no += 1
            release = stack.approved_release(people, f"3.{round_no}.0")
            deployment = stack.deploy(people, release, people.environment)
            deadline = time.monotonic() + 60
            while (d := Deployment.objects.get(pk=deployment.pk)).status == "queued":
                if time.monotonic() > deadline:
                    raise SystemExit(f"round {round_no}: no worker took deployment {d.pk}")
                time.sleep(0.05)
            # Two tiers of one service each roll out for about 2 x rollout, then verify.
            delay = rng.uniform(0, 2 * args.rollout)
            time.sleep(delay)
            d = Deployment.objects.get(pk=deployment.pk)
            name, proc = workers.owner_of(d)
            if d.status != "running" or proc is None:
                finished_first += 1
                killed = None
            else:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed = time.monotonic()
                del workers.by_name[name]
                workers.start()
            # Follow this deployment (and any rollback it starts) to the end.
            left = None
            deadline = time.monotonic() + bound + 120
            while time.monotonic() < deadline:
                d = Deployment.objects.get(pk=deployment.pk)
                if killed is not None and left is None and d.status != "running":
                    left = time.monotonic() - killed
                if d.status in FINAL and not active(people.project):
                    break
                time.sleep(0.1)
            d = Deployment.objects.get(pk=deployment.pk)
            outcomes[f"{d.status}" + (f" ({d.reason})" if d.status == "failed" else "")] += 1
            if d.status not in FINAL or active(people.project):
                stuck.append(round_no)
            if killed is not None:
                left_running.append(left if left is not None else float("inf"))
                to_final.append(time.monotonic() - killed)
                if left is None or left > bound:
                    late.append(round_no)
            wrong = cluster_matches(sim, people, namespace)
            if wrong:
                mismatched.append((round_no, wrong))
            what = f"after {delay:.1f} s" if killed else "nothing (done)"
            print(
                f"round {round_no:2}: killed {what}; #{d.pk} {d.status}"
                + (f", left running after {left:.1f} s" if killed and left is not None else "")
                + ("; cluster matches" if not wrong else f"; MISMATCH {wrong}")
            )
    finally:
        processes.stop()
        sim.stop()
    kills = len(left_running)
    print(f"kills: {kills} in {round_no} rounds ({finished_first} finished before the kill)")
    print(f"outcomes: {dict(outcomes)}")
    if left_running:
        print(
            f"left running after the kill: p50 {stack.percentile(left_running, 0.5):.1f} s, "
            f"max {max(left_running):.1f} s (bound {bound:.0f} s); finished (incl. rollback) "
            f"max {max(to_final):.1f} s"
        )
    print(f"late: {len(late)}, stuck running: {len(stuck)}, cluster mismatches: {len(mismatched)}")
    ok = not late and not stuck and not mismatched
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
