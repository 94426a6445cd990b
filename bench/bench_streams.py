"""A thousand event streams on one web process.

One uvicorn process serves N concurrent SSE streams of one project topic (one logged-in person,
from the position a page hands the browser). Measured: how long opening them all took, the Redis
connections that process holds while they are open (goal <= 5: one pattern subscription fans
wake-ups out to every stream, releasecenter/stream.py), its memory per open stream (RSS after
minus before, divided by N), and for each of several events published meanwhile, when it reached
each client (goal: p95 <= 250 ms from the commit, over all deliveries).

    .venv/bin/python bench/bench_streams.py [--streams 1000] [--events 5]

Needs PostgreSQL and Redis (see bench/README.md); it makes its own project each time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import stack  # noqa: E402

stack.run_prefix("bench-streams")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import transaction  # noqa: E402

from releasecenter import events  # noqa: E402
from tests.procnet import local_ports_connected_to, rss_bytes  # noqa: E402

REDIS_CONNECTIONS_BUDGET = 5
LATENCY_BUDGET_MS = 250.0


async def run(
    args: argparse.Namespace, url: str, pid: int, people: stack.People, cookie: str, position: int
) -> bool:
    topic = people.project.topic
    address = (urlsplit(url).hostname, urlsplit(url).port)
    redis_port = urlsplit(settings.REDIS_URL).port or 6379

    # Warm the process up (imports, first queries, the hub) with one stream, then measure.
    warm = stack.SSEClient(address, cookie, topic, position)
    warm_task = asyncio.create_task(warm.run())
    await asyncio.wait_for(warm.opened.wait(), 30)
    await asyncio.sleep(1)
    rss_before = rss_bytes(pid)

    clients = [stack.SSEClient(address, cookie, topic, position) for _ in range(args.streams)]
    started = time.monotonic()
    tasks = [asyncio.create_task(c.run()) for c in clients]
    deadline = started + args.open_timeout
    while time.monotonic() < deadline and not all(c.opened.is_set() for c in clients):
        await asyncio.sleep(0.05)
    opened = sum(c.opened.is_set() for c in clients)
    open_seconds = time.monotonic() - started
    await asyncio.sleep(2)  # let the process settle before reading its memory
    rss_after = rss_bytes(pid)
    redis_connections = len(local_ports_connected_to(pid, redis_port))
    print(f"streams open: {opened}/{args.streams} in {open_seconds:.1f} s")
    print(f"redis connections of the web process: {redis_connections}")
    per_stream_kib = (rss_after - rss_before) / max(opened, 1) / 1024
    print(
        f"memory: {rss_before / 2**20:.0f} MiB before, {rss_after / 2**20:.0f} MiB with "
        f"{opened} streams: {per_stream_kib:.0f} KiB per open stream"
    )

    latencies: list[float] = []
    missing = 0
    for i in range(args.events):
        verb = f"bench.stream.{i}"

        def publish(verb: str = verb) -> None:
            with transaction.atomic():
                events.publish(topic, verb, project=people.project)

        cpu_before = stack.cpu_seconds(pid)
        await asyncio.to_thread(publish)
        committed = time.monotonic()
        wait_until = committed + 10
        while time.monotonic() < wait_until and not all(verb in c.arrivals for c in clients):
            await asyncio.sleep(0.01)
        got = [(c.arrivals[verb] - committed) * 1000 for c in clients if verb in c.arrivals]
        cpu_ms = (stack.cpu_seconds(pid) - cpu_before) * 1000
        missing += args.streams - len(got)
        latencies.extend(got)
        print(
            f"event {i}: reached {len(got)}/{args.streams}; p50 "
            f"{stack.percentile(got, 0.5):.0f} ms, p95 {stack.percentile(got, 0.95):.0f} ms, "
            f"max {max(got, default=float('nan')):.0f} ms; web process CPU {cpu_ms:.0f} ms"
        )
        await asyncio.sleep(args.pause)

    p95 = stack.percentile(latencies, 0.95)
    print(
        f"all deliveries: {len(latencies)} of {args.streams * args.events}, p50 "
        f"{stack.percentile(latencies, 0.5):.0f} ms, p95 {p95:.0f} ms, "
        f"p99 {stack.percentile(latencies, 0.99):.0f} ms"
    )
    for c in [*clients, warm]:
        c.close()
    for t in [*tasks, warm_task]:
        t.cancel()
    await asyncio.gather(*tasks, warm_task, return_exceptions=True)

    ok = (
        opened == args.streams
        and missing == 0
        and redis_connections <= REDIS_CONNECTIONS_BUDGET
        and p95 <= LATENCY_BUDGET_MS
    )
    print(
        f"{'PASS' if ok else 'FAIL'}: all open and reached, Redis connections "
        f"<= {REDIS_CONNECTIONS_BUDGET}, p95 <= {LATENCY_BUDGET_MS:.0f} ms"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--events", type=int, default=5)
    parser.add_argument("--pause", type=float, default=1.0)
    parser.add_argument("--open-timeout", type=float, default=120.0)
    parser.add_argument(
        "--url", help="measure a web process already running here (e.g. under a profiler)"
    )
    parser.add_argument("--pid", type=int, help="that process's pid")
    args = parser.parse_args()
    stack.raise_file_limit()
    people = stack.make_project("bench-streams")
    processes = stack.Stack()
    try:
        if args.url:
            url, pid = args.url, args.pid
        else:
            url, proc = processes.web()
            pid = proc.pid
        print(f"one uvicorn process (pid {pid}) on {url}, {os.cpu_count()} cores")
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        cookie = stack.session_cookie(people.engineer)
        position = events.stream_cursor(people.project.topic)
        return 0 if asyncio.run(run(args, url, pid, people, cookie, position)) else 1
    finally:
        processes.stop()


if __name__ == "__main__":
    sys.exit(main())
