"""Drill: a web process is killed (kill -9) while 100 event streams are open on it and another.

Two uvicorn processes and two Celery workers on one PostgreSQL and Redis. 100 SSE clients follow
one project topic, half on each web process, while events are published steadily. Midway the
first web process is killed; its clients reconnect to the other with Last-Event-ID (what a browser
does behind a load balancer). Every client must end with every event exactly once, in order.

    .venv/bin/python drills/web_process_kill.py [--streams 100] [--events 300]

Needs PostgreSQL and Redis (see bench/README.md); it makes its own project each time.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import stack  # noqa: E402

stack.run_prefix("drill-web")

import django  # noqa: E402

django.setup()

from django.db import close_old_connections, transaction  # noqa: E402

from releasecenter import events  # noqa: E402


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between events")
    args = parser.parse_args()
    stack.raise_file_limit()
    people = stack.make_project("drill-web")
    topic = people.project.topic
    cookie = stack.session_cookie(people.engineer)
    start = events.stream_cursor(topic)
    processes = stack.Stack()
    try:
        url_a, web_a = processes.web()
        url_b, _web_b = processes.web()
        processes.worker("a", ("deployments", "checks", "notifications", "default"))
        processes.worker("b", ("deployments", "checks", "notifications", "default"))
        print(f"web A {url_a} (pid {web_a.pid}), web B {url_b}; two workers")
        verbs = [f"drill.{i}" for i in range(args.events)]
        outcome = asyncio.run(run(args, people, topic, cookie, start, url_a, url_b, web_a, verbs))
    finally:
        processes.stop()
    return outcome


async def run(args, people, topic, cookie, start, url_a, url_b, web_a, verbs) -> int:  # noqa: ANN001, PLR0913
    b = address(url_b)
    clients = [
        stack.SSEClient(address(url_a if i % 2 == 0 else url_b), cookie, topic, start)
        for i in range(args.streams)
    ]
    tasks = [asyncio.create_task(c.run(fallback=lambda: b)) for c in clients]
    await asyncio.wait_for(asyncio.gather(*(c.opened.wait() for c in clients)), 60)
    print(f"{len(clients)} streams open, {sum(c.address != b for c in clients)} on web A")

    killed_at: list[float] = []

    def publish() -> None:
        for i, verb in enumerate(verbs):
            with transaction.atomic():
                events.publish(topic, verb, project=people.project)
            if i == len(verbs) // 3:
                web_a.send_signal(signal.SIGKILL)
                killed_at.append(time.monotonic())
            time.sleep(args.interval)
        close_old_connections()

    publisher = threading.Thread(target=publish)
    publisher.start()
    await asyncio.to_thread(publisher.join)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(len(c.verbs) >= len(verbs) for c in clients):
        await asyncio.sleep(0.1)
    for c in clients:
        c.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    moved = [c for c in clients if c.reconnects]
    missing = sum(len(set(verbs) - set(c.verbs)) for c in clients)
    duplicates = sum(len(c.verbs) - len(set(c.verbs)) for c in clients)
    out_of_order = sum(c.verbs != [v for v in verbs if v in set(c.verbs)] for c in clients)
    complete = sum(c.verbs == verbs for c in clients)
    gaps = [
        (min(c.arrivals[v] for v in verbs[len(verbs) // 3 + 1 :] if v in c.arrivals) - killed_at[0])
        for c in moved
        if any(v in c.arrivals for v in verbs[len(verbs) // 3 + 1 :])
    ]
    print(f"web A killed after event {len(verbs) // 3} of {len(verbs)} published")
    print(
        f"clients reconnected to web B: {len(moved)} (reconnect attempts "
        f"{sum(c.reconnects for c in clients)}, refused {sum(c.failed_connects for c in clients)})"
    )
    if gaps:
        print(
            f"first event after the kill reached a moved client within p50 "
            f"{stack.percentile(gaps, 0.5):.2f} s, max {max(gaps):.2f} s"
        )
    print(
        f"clients with every event exactly once and in order: {complete}/{len(clients)}; "
        f"events missed {missing}, duplicated {duplicates}, clients out of order {out_of_order}"
    )
    ok = complete == len(clients) and len(moved) >= len(clients) // 2
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
