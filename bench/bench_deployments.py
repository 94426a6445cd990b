"""What a deployment costs beyond the rollout itself, and how fast its progress reaches a browser.

A project of 300 services in 5 tiers of 60 is deployed by a real Celery worker to the simulated
cluster (its own process) with rollout_seconds=0, so every millisecond is orchestration: the
claim, the snapshot (one list, one YAML artifact), the patches, the watches, the verification of
each service's health through the health-check engine, and the records (steps, log lines, what
runs where, live events). Meanwhile an SSE client follows the deployment's topic through a real
uvicorn web server; every change carries the moment the worker made it (``t``), and the client
notes when it arrives.

Goals: orchestration overhead per service (deployment wall time / services) <= 20 ms median over
the runs; live events from the worker to the SSE client p95 <= 100 ms.

    .venv/bin/python bench/bench_deployments.py [--services 300] [--tiers 5] [--runs 3]

Needs PostgreSQL and Redis (see bench/README.md); it makes its own project each time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "releasecenter.settings_test")
# The bench's own deployments are created by the services (which enqueue on commit) into queues
# nobody reads; the run is then handed to the worker's queue once the SSE client is listening.
HOLD_PREFIX = f"bench-hold-{os.getpid()}-"
RUN_PREFIX = f"bench-run-{os.getpid()}-"
RUN_QUEUE = f"{RUN_PREFIX}deployments"
os.environ["CELERY_QUEUE_PREFIX"] = HOLD_PREFIX

import django  # noqa: E402
import httpx  # noqa: E402
import yaml  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.test import Client  # noqa: E402

from deployments import services  # noqa: E402
from deployments.models import DeploymentStep  # noqa: E402
from deployments.tasks import run_deployment  # noqa: E402
from releasecenter import services as core  # noqa: E402
from releasecenter.models import Membership, Service  # noqa: E402

OVERHEAD_BUDGET_MS = 20.0
LATENCY_BUDGET_MS = 100.0
NAMESPACE = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    db = settings.DATABASES["default"]
    env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env.update(extra)
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux), to show cost apart from a busy machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(round(fraction * len(ordered))) - 1))]


class StreamReader(threading.Thread):
    """Follows one topic over SSE and notes, for every change, how long it took to arrive."""

    def __init__(self, url: str, cookie: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.url, self.cookie, self.topic = url, cookie, topic
        self.latencies_ms: list[float] = []
        # The two halves: change → its event row written (worker), row → client (stream).
        self.recorded_ms: list[float] = []
        self.streamed_ms: list[float] = []
        self.connected = threading.Event()
        self.finished = threading.Event()
        self.frames = 0

    def run(self) -> None:
        cookies = {settings.SESSION_COOKIE_NAME: self.cookie}
        with (
            httpx.Client(
                base_url=self.url, cookies=cookies, timeout=httpx.Timeout(5, read=120)
            ) as client,
            client.stream("GET", "/events/stream", params={"topic": self.topic}) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("retry:"):
                    self.connected.set()
                if not line.startswith("data: "):
                    continue
                received = time.time()
                self.frames += 1
                event = json.loads(line[6:])
                written = datetime.fromisoformat(event["at"]).timestamp()
                self.streamed_ms.append((received - written) * 1000)
                for change in (event.get("data") or {}).get("changes", []):
                    if "t" in change:
                        self.latencies_ms.append((received - change["t"]) * 1000)
                        self.recorded_ms.append((written - change["t"]) * 1000)
                    if change.get("type") == "status" and change.get("status") in (
                        "succeeded",
                        "failed",
                        "cancelled",
                    ):
                        self.finished.set()
                        return


def build_project(count: int, tiers: int, sim_url: str, sim_port: int):  # noqa: ANN201
    User = get_user_model()  # noqa: N806
    user, _ = User.objects.get_or_create(username="bench-deployer")
    slug = f"bench-deploy-{int(time.time())}"
    project = core.create_project(user, slug=slug, name=f"Deploy bench {slug}")
    membership = Membership.objects.get(user=user, project=project)
    environment = core.create_environment(user, membership, name="staging", kind="staging")
    Service.objects.bulk_create(
        [
            Service(project=project, name=f"svc-{i:04d}", tier=1 + i * tiers // count)
            for i in range(count)
        ]
    )
    services.save_deploy_target(
        user,
        membership,
        environment,
        strategy="kubernetes",
        api_url=sim_url,
        bearer_token="bench",
        namespace=NAMESPACE,
        health_url_template=sim_url + "/_services/{namespace}/{deployment}",
        verify_allow_list=f"127.0.0.1:{sim_port}",
        verify_timeout_seconds=30,
        rollout_timeout_seconds=60,
    )
    return user, membership, environment


def one_run(  # noqa: PLR0913
    user,  # noqa: ANN001
    membership,  # noqa: ANN001
    environment,  # noqa: ANN001
    version: str,
    web_url: str,
    cookie: str,
    worker_pid: int,
) -> dict:
    release = services.create_release(user, membership, version=version, commit_sha="abcdef1234")
    services.submit_for_review(user, membership, release)
    deployment, _ = services.start_deployment(user, membership, release, environment)
    reader = StreamReader(web_url, cookie, deployment.topic)
    reader.start()
    if not reader.connected.wait(10):
        raise RuntimeError("the SSE stream did not open")
    cpu_before = cpu_seconds(worker_pid)
    run_deployment.apply_async(args=[deployment.pk], queue=RUN_QUEUE)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        deployment.refresh_from_db()
        if deployment.finished:
            break
        time.sleep(0.2)
    worker_cpu = cpu_seconds(worker_pid) - cpu_before
    reader.finished.wait(30)
    if deployment.status != "succeeded":
        raise RuntimeError(f"deployment #{deployment.pk} {deployment.status}: {deployment.reason}")
    steps = list(DeploymentStep.objects.filter(deployment=deployment))
    count = len({s.service_name for s in steps})
    wall = (deployment.finished_at - deployment.started_at).total_seconds()
    per_tier = []
    for tier in sorted({s.tier for s in steps}):
        mine = [s for s in steps if s.tier == tier and s.kind != "snapshot"]
        span = max(s.finished_at for s in mine) - min(s.started_at for s in mine)
        per_tier.append(span.total_seconds() * 1000 / (len(mine) / 3))
    return {
        "id": deployment.pk,
        "services": count,
        "wall_s": wall,
        "per_service_ms": wall * 1000 / count,
        "worker_cpu_ms": worker_cpu * 1000 / count,
        "per_tier_ms": per_tier,
        "latencies_ms": reader.latencies_ms,
        "recorded_ms": reader.recorded_ms,
        "streamed_ms": reader.streamed_ms,
        "frames": reader.frames,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=300)
    parser.add_argument("--tiers", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not settings.REDIS_URL or not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        print("Run with PostgreSQL (DATABASE_URL) and Redis (REDIS_URL); see bench/README.md.")
        return 2

    procs: list[subprocess.Popen] = []
    folder = tempfile.TemporaryDirectory(prefix="bench-deploy-")
    try:
        sim_port, web_port = free_port(), free_port()
        names = [f"svc-{i:04d}" for i in range(args.services)]
        seed = Path(folder.name) / "seed.yaml"
        seed.write_text(
            yaml.safe_dump(
                {
                    "deployments": [
                        {"namespace": NAMESPACE, "name": n, "image": f"registry.example/{n}:1.0.0"}
                        for n in names
                    ]
                }
            )
        )
        sim = subprocess.Popen(
            [sys.executable, "-m", "deployments.sim", "--port", str(sim_port)]
            + ["--rollout-seconds", "0", "--seed", str(seed)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        procs.append(sim)
        web = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "releasecenter.asgi:application"]
            + ["--host", "127.0.0.1", "--port", str(web_port), "--log-level", "warning"]
            + ["--lifespan", "off"],
            cwd=ROOT,
            env=child_env(),
        )
        procs.append(web)
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "releasecenter", "worker", "--pool=solo"]
            + ["--without-gossip", "--without-mingle", "--loglevel=WARNING", "-Q", RUN_QUEUE]
            + ["-n", f"bench-{os.getpid()}@%h"],
            cwd=ROOT,
            env=child_env(CELERY_QUEUE_PREFIX=RUN_PREFIX),
        )
        procs.append(worker)
        wait_for_port(sim_port, sim)
        wait_for_port(web_port, web)
        sim_url = f"http://127.0.0.1:{sim_port}"
        user, membership, environment = build_project(args.services, args.tiers, sim_url, sim_port)
        browser = Client()
        browser.force_login(user)
        cookie = browser.cookies[settings.SESSION_COOKIE_NAME].value
        print(
            f"{args.services} services in {args.tiers} tiers, rollout_seconds=0, "
            f"{args.runs} runs (worker, simulated cluster and web server in their own processes)"
        )
        results = []
        for run in range(args.runs):
            result = one_run(
                user,
                membership,
                environment,
                f"2.0.{run + 1}",
                f"http://127.0.0.1:{web_port}",
                cookie,
                worker.pid,
            )
            results.append(result)
            lat = result["latencies_ms"]
            print(
                f"run {run + 1}: deployment #{result['id']}  wall {result['wall_s']:.2f} s  "
                f"{result['per_service_ms']:.2f} ms/service, worker CPU "
                f"{result['worker_cpu_ms']:.2f} ms/service  "
                f"(per tier: {', '.join(f'{t:.1f}' for t in result['per_tier_ms'])} ms/service)  "
                f"live changes {len(lat)} in {result['frames']} events: "
                f"p50 {percentile(lat, 0.5):.1f} ms  p95 {percentile(lat, 0.95):.1f} ms  "
                f"max {max(lat):.1f} ms  (change → event row p95 "
                f"{percentile(result['recorded_ms'], 0.95):.1f} ms, row → client p95 "
                f"{percentile(result['streamed_ms'], 0.95):.1f} ms)"
            )
        overhead = statistics.median(r["per_service_ms"] for r in results)
        latencies = [ms for r in results for ms in r["latencies_ms"]]
        p95 = percentile(latencies, 0.95)
        ok_overhead = overhead <= OVERHEAD_BUDGET_MS
        ok_latency = p95 <= LATENCY_BUDGET_MS
        load = os.getloadavg()[0]
        print(f"load average during the runs: {load:.1f} on {os.cpu_count()} CPUs")
        print(
            f"orchestration overhead per service, median of {len(results)} runs: {overhead:.2f} ms"
            f" ({'within' if ok_overhead else 'OVER'} the {OVERHEAD_BUDGET_MS:g} ms budget)"
        )
        print(
            f"worker → SSE client, {len(latencies)} changes: p50 "
            f"{percentile(latencies, 0.5):.1f} ms  p95 {p95:.1f} ms "
            f"({'within' if ok_latency else 'OVER'} the {LATENCY_BUDGET_MS:g} ms budget)"
        )
        return 0 if ok_overhead and ok_latency else 1
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        folder.cleanup()
        # Messages the services enqueued for the hold queues nobody reads.
        import redis

        from releasecenter.queues import QUEUES

        redis.Redis.from_url(settings.REDIS_URL).delete(*(HOLD_PREFIX + q for q in QUEUES))


if __name__ == "__main__":
    raise SystemExit(main())
