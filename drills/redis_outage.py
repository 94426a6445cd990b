"""Drill: Redis stops for 60 s while people tick a checklist and a deployment runs.

Everything (two uvicorn processes, two Celery workers, beat, this script) uses a throwaway
redis-server on a port of its own, never the machine's Redis. People tick and untick items of a
checklist run through the API on both web processes, 20 clients follow the run's event stream,
and a deployment rolls out to a simulated cluster. Then Redis is stopped (SIGTERM; its
append-only file keeps the queues) for 60 s and started again. Expected: no tick lost (every
answered tick is an event, and every stream has every event), streams keep delivering by polling
while Redis is away and by wake-ups after, Celery reconnects (a job sent after the outage runs),
beat takes its lease again, and the deployment finishes or is reaped correctly.

    .venv/bin/python drills/redis_outage.py [--outage 60] [--streams 20]

Needs PostgreSQL (see bench/README.md); it makes its own project each time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import stack  # noqa: E402

stack.run_prefix("drill-redis")
REDIS_PORT = stack.free_port()
os.environ["REDIS_URL"] = f"redis://127.0.0.1:{REDIS_PORT}/0"

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
import redis  # noqa: E402
from django.db import close_old_connections  # noqa: E402

from checklists import services as checklists  # noqa: E402
from checklists.models import RunItem  # noqa: E402
from deployments.models import Deployment  # noqa: E402
from deployments.sim import serve  # noqa: E402
from releasecenter import services as core  # noqa: E402
from releasecenter.beat import lease_key  # noqa: E402
from releasecenter.models import AuditEvent  # noqa: E402
from releasecenter.tasks import announce  # noqa: E402

RUNBOOK = "# Drill runbook\n\n## Steps\n\n" + "".join(f"- [ ] step {i}\n" for i in range(12))
ALL_QUEUES = ("deployments", "checks", "notifications", "default")


class Ticker(threading.Thread):
    """One person ticking and unticking their items through the API, alternating web processes."""

    def __init__(self, urls: list[str], token: str, path: str, items: list[int], stop) -> None:  # noqa: ANN001
        super().__init__(daemon=True)
        self.urls, self.token, self.path, self.items, self.stop = urls, token, path, items, stop
        self.answered: list[tuple[float, str]] = []  # (when, phase)
        self.errors: collections.Counter = collections.Counter()
        self.phase = "before"

    def run(self) -> None:
        versions: dict[int, int] = {}
        ticked: dict[int, bool] = {}
        headers = {"Authorization": f"Bearer {self.token}"}
        n = 0
        while not self.stop.is_set():
            item = self.items[n % len(self.items)]
            url = self.urls[n % len(self.urls)]
            n += 1
            action = "untick" if ticked.get(item) else "tick"
            try:
                if item not in versions:
                    versions[item] = RunItem.objects.get(pk=item).version
                    close_old_connections()
                r = httpx.post(
                    f"{url}{self.path}{item}/",
                    json={"action": action, "version": versions[item]},
                    headers=headers,
                    timeout=10,
                )
            except httpx.HTTPError as exc:
                self.errors[(self.phase, type(exc).__name__)] += 1
                time.sleep(0.2)
                continue
            if r.status_code == 200:
                versions[item] = r.json()["version"]
                ticked[item] = action == "tick"
                self.answered.append((time.monotonic(), self.phase))
            else:
                self.errors[(self.phase, r.status_code)] += 1
                versions.pop(item, None)
            time.sleep(0.25)


def main() -> int:  # noqa: PLR0915
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=60.0)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--people", type=int, default=3)
    args = parser.parse_args()
    stack.raise_file_limit()
    processes = stack.Stack()
    data_dir = tempfile.mkdtemp(prefix="drill-redis-")
    redis_proc = processes.redis_server(REDIS_PORT, data_dir)
    broker = redis.Redis(port=REDIS_PORT, socket_timeout=2)
    people = stack.make_project("drill-redis", services=2)
    sim = serve(rollout_seconds=args.outage / 2 + 10, progress_deadline_seconds=600)
    stack.point_at_cluster(people, people.environment, sim, "drill")
    template = checklists.import_runbook(people.admin, people.project, RUNBOOK).template
    run = checklists.create_run(people.admin, template, environment=people.environment)
    items = list(RunItem.objects.filter(run=run).values_list("pk", flat=True))
    topic = f"run:{run.pk}"
    start = AuditEvent.objects.filter(topic=topic).order_by("-stream_position").first()
    start = start.stream_position if start and start.stream_position else 0
    cookie = stack.session_cookie(people.engineer)
    stop = threading.Event()
    try:
        url_a, _ = processes.web()
        url_b, _ = processes.web()
        processes.worker("a", ALL_QUEUES)
        processes.worker("b", ALL_QUEUES)
        processes._start(  # noqa: SLF001
            [sys.executable, "-m", "celery", "-A", "releasecenter", "beat", "--loglevel=WARNING"]
            + ["-s", f"{data_dir}/beat-schedule"],
            BEAT_LEASE_SECONDS="10",
        )
        print(f"redis-server on port {REDIS_PORT} (throwaway); web {url_a} and {url_b}; 2 workers")
        path = f"/api/v1/projects/{people.project.slug}/checklist-runs/{run.pk}/items/"
        tickers = []
        for i in range(args.people):
            _token, raw = core.create_api_token(people.engineer, f"drill person {i}")
            share = items[i :: args.people]
            tickers.append(Ticker([url_a, url_b], raw, path, share, stop))
        result = asyncio.run(
            scenario(
                args,
                people,
                topic,
                cookie,
                start,
                (url_a, url_b),
                tickers,
                stop,
                redis_proc,
                processes,
                data_dir,
                broker,
            )
        )
    finally:
        stop.set()
        processes.stop()
        sim.stop()
    return result


async def scenario(
    args,
    people,
    topic,
    cookie,
    start,
    urls,
    tickers,
    stop,
    redis_proc,
    processes,  # noqa: ANN001, C901, PLR0913, PLR0915
    data_dir,
    broker,
) -> int:
    addresses = [(urlsplit(u).hostname, urlsplit(u).port) for u in urls]
    clients = [stack.SSEClient(addresses[i % 2], cookie, topic, start) for i in range(args.streams)]
    # A stream that ends reconnects to the same web process from its last id.
    tasks = [asyncio.create_task(c.run(fallback=lambda c=c: c.address)) for c in clients]
    await asyncio.wait_for(asyncio.gather(*(c.opened.wait() for c in clients)), 60)
    for t in tickers:
        t.start()
    release = await asyncio.to_thread(stack.approved_release, people, "5.0.0")
    deployment = await asyncio.to_thread(stack.deploy, people, release, people.environment)
    # Stop Redis once the rollout is under way and beat holds its lease.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        running = await asyncio.to_thread(lambda: Deployment.objects.get(pk=deployment.pk).status)
        lease_before = await asyncio.to_thread(broker.get, lease_key())
        if running == "running" and lease_before is not None:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)
    print(
        f"{len(clients)} streams open; {len(tickers)} people ticking; deployment "
        f"#{deployment.pk} {running}; beat holds its lease: {lease_before is not None}"
    )

    redis_proc.send_signal(signal.SIGTERM)
    redis_proc.wait()
    down_at = time.time()
    for t in tickers:
        t.phase = "during"
    print(f"redis stopped for {args.outage:.0f} s")
    await asyncio.sleep(args.outage)
    redis_proc = processes.redis_server(REDIS_PORT, data_dir)
    up_at = time.time()
    for t in tickers:
        t.phase = "after"
    print("redis started again")
    # Celery reconnects: a job sent now must run.
    await asyncio.sleep(2)
    await asyncio.to_thread(announce.delay, people.project.pk, "after the outage", None)
    sent = time.monotonic()
    ran = None
    while time.monotonic() - sent < 60:
        done = await asyncio.to_thread(
            lambda: AuditEvent.objects.filter(
                topic=people.project.topic, verb="announcement.posted"
            ).exists()
        )
        if done:
            ran = time.monotonic() - sent
            break
        await asyncio.sleep(0.2)
    lease_after = None
    while time.time() - up_at < 30 and lease_after is None:
        lease_after = await asyncio.to_thread(broker.get, lease_key())
        await asyncio.sleep(0.5)
    await asyncio.sleep(10)
    stop.set()
    for t in tickers:
        await asyncio.to_thread(t.join)
    # The deployment: finished, or reaped (its worker never died here, so finished).
    final = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        d = await asyncio.to_thread(lambda: Deployment.objects.get(pk=deployment.pk))
        if d.status not in ("queued", "running", "rolling_back"):
            final = d
            break
        await asyncio.sleep(1)

    events = await asyncio.to_thread(
        lambda: list(
            AuditEvent.objects.filter(topic=topic, stream_position__gt=start)
            .order_by("stream_position")
            .values_list("stream_position", "verb", "created_at")
        )
    )
    positions = [p for p, _, _ in events]
    during = {p for p, _, at in events if down_at <= at.timestamp() < up_at}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(
        {p for p, _ in c.received} >= set(positions) for c in clients
    ):
        await asyncio.sleep(0.2)
    for c in clients:
        c.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    answered = [phase for t in tickers for _, phase in t.answered]
    by_phase = {p: answered.count(p) for p in ("before", "during", "after")}
    tick_events = [v for _, v, _ in events if v in ("run.item.ticked", "run.item.unticked")]
    missing = sum(len(set(positions) - {p for p, _ in c.received}) for c in clients)
    duplicates = sum(len(c.received) - len({p for p, _ in c.received}) for c in clients)
    print(
        f"ticks answered: {len(answered)} ({by_phase['before']} before, {by_phase['during']} "
        f"during, {by_phase['after']} after the outage); not answered 200: "
        f"{dict(sum((t.errors for t in tickers), collections.Counter()))}"
    )
    print(f"tick events in the database: {len(tick_events)} (run events in all: {len(events)})")
    latencies = [lat for c in clients for _, lat in c.received]
    polled = [lat for c in clients for p, lat in c.received if p in during]
    print(
        f"stream deliveries: {len(latencies)}; missed {missing}, duplicated {duplicates}; "
        f"delivery p50 {stack.percentile(latencies, 0.5):.2f} s, p95 "
        f"{stack.percentile(latencies, 0.95):.2f} s, max {max(latencies, default=0):.2f} s"
    )
    print(
        f"events written while Redis was down: {len(during)}, delivered by polling "
        f"{len(polled)} times (p95 {stack.percentile(polled, 0.95):.2f} s)"
    )
    print(
        f"celery after the outage: a new job ran "
        f"{f'in {ran:.1f} s' if ran is not None else 'NOT within 60 s'}; beat lease taken "
        f"again: {lease_after is not None}"
    )
    print(
        f"deployment #{deployment.pk}: "
        f"{final.status + (' (' + final.reason + ')' if final.reason else '') if final else 'STILL ACTIVE'}"
    )
    ok = (
        len(tick_events) == len(answered)
        and by_phase["during"] > 0
        and len(polled) == len(during) * len(clients)
        and missing == 0
        and ran is not None
        and lease_after is not None
        and final is not None
        and final.status in ("succeeded", "failed", "rolled_back")
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
