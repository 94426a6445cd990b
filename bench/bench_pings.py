"""Heartbeat pings per second on one web process, and their latency.

    .venv/bin/python bench/bench_pings.py [--rate 1000] [--seconds 10] [--checks 500]

Goal (issue 14): 1,000 pings/s on one web process (uvicorn, one worker, as the Procfile runs
it) with p95 ≤ 20 ms. On its own database (DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/rc_bench_pings; created and migrated if missing; only the
project "bench-pings" in it is touched, recreated each run) and REDIS_URL.

Makes `--checks` heartbeat checks, starts uvicorn on 127.0.0.1, then sends pings open-loop at
`--rate` per second for `--seconds` (each request leaves on its schedule whether or not earlier
ones have been answered, so a slow server shows as latency, not as a lower offered rate),
spread over the checks (each check stays under its rate limit), with a 200-byte body like a
job's log line. Every tenth ping is to an unknown key (404). Prints the achieved rate, latency
percentiles of hits and misses, answers by status, and what was stored.

A ping is answered once it is in the ping inbox; a Celery worker records it from there
(monitoring.tasks.record_ping_inbox). No worker runs here, so the web process is measured
alone; afterwards the inbox is recorded in one go (what a worker does, `heartbeats.drain`)
and its rate printed, which a worker must beat to keep up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import benchdb  # the scripts run from bench/, which is first on sys.path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/rc_bench_pings"
SLUG = "bench-pings"
GOAL_RATE = 1_000.0
GOAL_P95_MS = 20.0


def prepare(count: int) -> list[str]:
    from django.db import transaction

    from monitoring.models import Check
    from releasecenter.models import Environment, Project

    Project.objects.filter(slug=SLUG).delete()
    with transaction.atomic():
        project = Project.objects.create(slug=SLUG, name="Bench pings")
        env = Environment.objects.create(project=project, name="production")
        checks = Check.objects.bulk_create(
            Check(
                project=project,
                environment=env,
                name=f"job {i:05}",
                probe=Check.Probe.HEARTBEAT,
                ping_key=uuid.uuid4(),
                heartbeat_period_seconds=3600,
                heartbeat_grace_seconds=300,
                assertions=[],
            )
            for i in range(count)
        )
    return [str(c.ping_key) for c in checks]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_web(port: int) -> subprocess.Popen:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "releasecenter.settings_test"}
    web = subprocess.Popen(  # noqa: S603
        [
            str(ROOT / ".venv/bin/uvicorn"),
            "releasecenter.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return web
        except OSError:
            time.sleep(0.2)
    web.kill()
    raise SystemExit("uvicorn did not start within 60 s")


async def drive(port: int, keys: list[str], rate: float, seconds: float) -> dict:
    total = int(rate * seconds)
    latencies: dict[str, list[float]] = {"hit": [], "miss": []}
    statuses: Counter[int] = Counter()
    body = b"cleanup finished: 1234 rows removed, 0 errors " * 4
    connector = aiohttp.TCPConnector(limit=400)
    async with aiohttp.ClientSession(connector=connector) as session:
        base = f"http://127.0.0.1:{port}/ping/"
        # Warm up: the first requests open connections and the server's database connection.
        for key in keys[:20]:
            async with session.post(base + key, data=body) as response:
                await response.read()

        async def one(index: int) -> None:
            miss = index % 10 == 9
            key = str(uuid.uuid4()) if miss else keys[index % len(keys)]
            started = time.perf_counter()
            try:
                async with session.post(base + key, data=body) as response:
                    await response.read()
                    statuses[response.status] += 1
            except aiohttp.ClientError:
                statuses[0] += 1
                return
            latencies["miss" if miss else "hit"].append((time.perf_counter() - started) * 1000)

        began = time.perf_counter()
        tasks = []
        for index in range(total):
            wait = began + index / rate - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(index)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - began
    return {"total": total, "elapsed": elapsed, "latencies": latencies, "statuses": statuses}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=GOAL_RATE)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--checks", type=int, default=500)
    args = parser.parse_args()

    database = benchdb.setup_django(DEFAULT_DB)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, database {database}")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    keys = prepare(args.checks)
    port = free_port()
    web = start_web(port)
    try:
        seen = asyncio.run(drive(port, keys, args.rate, args.seconds))
    finally:
        web.terminate()
        web.wait(30)

    from monitoring import heartbeats
    from monitoring.models import CheckResult

    drain_started = time.perf_counter()
    drained = heartbeats.drain()
    drain_seconds = time.perf_counter() - drain_started
    stored = CheckResult.objects.filter(health_check__project__slug=SLUG).count()
    rate = seen["total"] / seen["elapsed"]
    hits, misses = seen["latencies"]["hit"], seen["latencies"]["miss"]
    everything = hits + misses
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(
        f"{seen['total']} pings in {seen['elapsed']:.2f} s = {rate:.0f}/s; answers "
        + ", ".join(f"{code}: {n}" for code, n in sorted(seen["statuses"].items()))
    )
    for name, values in (("hits", hits), ("unknown keys", misses), ("all", everything)):
        if values:
            print(
                f"  {name:<13} p50 {statistics.median(values):6.2f} ms  "
                f"p95 {percentile(values, 0.95):6.2f} ms  p99 {percentile(values, 0.99):6.2f} ms"
            )
    print(f"  results stored: {stored} (+20 warm-up pings)")
    print(
        f"  recording the inbox afterwards (a worker's drain): {drained} pings in "
        f"{drain_seconds:.2f} s = {drained / max(drain_seconds, 1e-9):.0f}/s"
    )
    p95 = percentile(everything, 0.95)
    rate_ok = rate >= 0.95 * args.rate and seen["statuses"][200] >= 0.85 * seen["total"]
    print(
        f"{'PASS' if rate_ok else 'FAIL'}  {rate:.0f} pings/s sent and answered (goal {args.rate:.0f})"
    )
    print(
        f"{'PASS' if p95 <= GOAL_P95_MS else 'FAIL'}  p95 {p95:.2f} ms (goal <= {GOAL_P95_MS:.0f} ms)"
    )
    return 0 if rate_ok and p95 <= GOAL_P95_MS else 1


if __name__ == "__main__":
    sys.exit(main())
