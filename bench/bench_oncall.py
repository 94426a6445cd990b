"""On-call: the public status page, the escalation tick, and webhooks to a slow receiver.

On its own database (DATABASE_URL, default rc_bench_oncall: dropped and made again):

* ``status``: a project with 300 services, a check each in production and 90 days of daily
  rollups, its status page in 30 groups. Renders ``/status/<slug>/`` through Django's request
  handler, anonymously: uncached (the cache cleared before every request: the work of one
  render), cached (what a crowd refreshing gets), and uncached again while another thread
  writes check results and rollups the way health checks do. Goal: p95 <= 20 ms.
* ``tick``: 1,000 open P1 incidents over 10 projects with 100 schedules (10 per project) and
  two-level policies. Times the beat's tick when nothing is due (the usual case), the tick that
  pages level 1 of all 1,000, and the one that escalates all 1,000 to level 2. Goal: <= 1 s.
* ``webhooks``: 500 signed webhook deliveries to a receiver on 127.0.0.1 that takes 1 s per
  answer, on a notifications worker (threads, 50), while a worker on the checks queue runs 20
  health checks; prints how late the checks were and when all 500 had arrived (verified).

    .venv/bin/python bench/bench_oncall.py [--only status|tick|webhooks]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchdb import recreate_database  # noqa: E402  bench/ is first on sys.path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "releasecenter.settings_test")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rc_bench_oncall")


def percentiles(samples: list[float]) -> str:
    samples = sorted(samples)
    p95 = samples[max(0, int(len(samples) * 0.95) - 1)]
    return f"p50 {statistics.median(samples):.2f}  p95 {p95:.2f}  max {samples[-1]:.2f} ms"


def p95(samples: list[float]) -> float:
    samples = sorted(samples)
    return samples[max(0, int(len(samples) * 0.95) - 1)]


def make_project(slug: str, services: int = 8):  # noqa: ANN201
    from django.contrib.auth import get_user_model

    from releasecenter import services as core
    from releasecenter.models import Membership, Service

    User = get_user_model()  # noqa: N806
    admin, _ = User.objects.get_or_create(username=f"{slug}-admin")
    project = core.create_project(admin, slug=slug, name=slug.title())
    admin_m = Membership.objects.get(user=admin, project=project)
    production = core.create_environment(
        admin, admin_m, name="production", kind="production", protected=True
    )
    Service.objects.bulk_create(
        Service(project=project, name=f"svc-{i:03d}", tier=1 + i % 3) for i in range(services)
    )
    return admin, admin_m, project, production


# --- Status page -----------------------------------------------------------------------------------


def bench_status(requests: int) -> bool:
    from django.core.cache import cache
    from django.db import connection, transaction
    from django.db.models import F
    from django.test import Client

    from monitoring.models import Check, CheckRollup
    from monitoring.oncall import status_page

    admin, admin_m, project, production = make_project("status-bench", services=300)
    services = list(project.services.order_by("name"))
    checks = Check.objects.bulk_create(
        Check(
            project=project,
            environment=production,
            service=s,
            name=f"probe {s.name}",
            url=f"http://127.0.0.1:9/{s.name}/health",
            status=Check.Status.PASSING if i % 17 else Check.Status.FAILING,
        )
        for i, s in enumerate(services)
    )
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    CheckRollup.objects.bulk_create(
        (
            CheckRollup(
                health_check=c,
                span="day",
                start=today - timedelta(days=d),
                runs=1440,
                failures=(c.pk * d) % 7 == 0 and (d % 5) or 0,
            )
            for c in checks
            for d in range(90)
        ),
        batch_size=5000,
    )
    groups = [
        {"name": f"Group {g}", "services": [s.name for s in services[g * 10 : g * 10 + 10]]}
        for g in range(30)
    ]
    started = time.perf_counter()
    with transaction.atomic():
        page = status_page.configure(
            admin, admin_m, enabled=True, environment="production", groups=groups
        )
    written = status_page.refresh(page)
    print(
        f"status page: 300 services in 30 groups, 90 days; precomputing {written} day states "
        f"took {(time.perf_counter() - started) * 1000:.0f} ms"
    )
    client = Client(HTTP_HOST="localhost")
    url = f"/status/{project.slug}/"
    for _ in range(10):
        cache.clear()
        assert client.get(url).status_code == 200
    queries: list[str] = []

    def count(execute, sql, params, many, context):  # noqa: ANN001, ANN202
        queries.append(sql)
        return execute(sql, params, many, context)

    cache.clear()
    with connection.execute_wrapper(count):
        body = client.get(url).content
    print(f"page: {len(body) // 1024} KiB, {len(queries)} queries when not cached")

    cpu: dict[str, list[float]] = defaultdict(list)

    def run(clear: bool, label: str) -> list[float]:
        samples = []
        for _ in range(requests):
            if clear:
                cache.clear()
            t, c = time.perf_counter(), time.process_time()
            response = client.get(url)
            samples.append((time.perf_counter() - t) * 1000)
            cpu[label].append((time.process_time() - c) * 1000)
            assert response.status_code == 200
        return samples

    uncached = run(True, "uncached")
    cached = run(False, "cached")
    stop = threading.Event()
    writes = [0]

    def write_results() -> None:
        # What health checks do, as fast as one connection can: rollups and check states.
        try:
            while not stop.is_set():
                with transaction.atomic():
                    CheckRollup.objects.filter(
                        span="day", start=today, health_check__in=checks[:50]
                    ).update(runs=F("runs") + 1)
                    Check.objects.filter(pk__in=[c.pk for c in checks[:50]]).update(
                        last_run_at=datetime.now(UTC)
                    )
                writes[0] += 1
        finally:
            connection.close()

    writer = threading.Thread(target=write_results)
    writer.start()
    try:
        busy = run(True, "busy")
    finally:
        stop.set()
        writer.join()
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"uncached render:             wall {percentiles(uncached)}")
    print(f"                             cpu  {percentiles(cpu['uncached'])}")
    print(f"cached (ETag, 10 s):         wall {percentiles(cached)}")
    print(
        f"uncached, checks writing:    wall {percentiles(busy)}  ({writes[0]} write transactions)"
    )
    print(f"                             cpu  {percentiles(cpu['busy'])}")
    verdict = {True: "met", False: "NOT met"}
    print(
        f"goal p95 <= 20 ms: served (cached) {verdict[p95(cached) <= 20]}; uncached render "
        f"wall {verdict[p95(uncached) <= 20]}, cpu {verdict[p95(cpu['uncached']) <= 20]}; "
        f"while checks write: wall {verdict[p95(busy) <= 20]}, cpu {verdict[p95(cpu['busy']) <= 20]}"
    )
    return p95(cached) <= 20 and p95(cpu["uncached"]) <= 20


# --- Escalation tick -----------------------------------------------------------------------------


def bench_tick() -> bool:
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from monitoring.incidents.models import Incident
    from monitoring.oncall import escalation, schedules
    from releasecenter import services as core

    User = get_user_model()  # noqa: N806
    now = timezone.now()
    incidents = []
    for p in range(10):
        admin, admin_m, project, production = make_project(f"tick-{p}")
        names = []
        for u in range(4):
            user = User.objects.create_user(f"tick-{p}-user-{u}")
            core.add_member(admin, admin_m, username=user.username, role="engineer")
            names.append(user.username)
        for s in range(10):
            schedules.create_schedule(
                admin,
                admin_m,
                name=f"Schedule {s}",
                time_zone=["Europe/Berlin", "America/New_York", "Asia/Tokyo"][s % 3],
                rotation="weekly" if s % 2 else "daily",
                handoff="09:00",
                members=names[s % 4 :] + names[: s % 4],
                anchor=date(2026, 1, 5),
            )
        escalation.set_policy(
            admin,
            admin_m,
            {
                "P1": [
                    {"schedule": f"Schedule {p % 10}", "wait_minutes": 5},
                    {
                        "schedule": f"Schedule {(p + 1) % 10}",
                        "members": [names[0]],
                        "wait_minutes": 5,
                    },
                ]
            },
        )
        incidents += [
            Incident(
                project=project,
                number=n + 1,
                title=f"Incident {n} of {project.slug}",
                severity="P1",
                started_at=now,
                acknowledge_due_at=now + timedelta(minutes=15),
                update_due_at=now + timedelta(minutes=30),
            )
            for n in range(100)
        ]
    Incident.objects.bulk_create(incidents, batch_size=500)
    print("escalation: 1,000 open P1 incidents, 10 projects, 100 schedules")

    def timed(label: str, at: datetime, expect: int) -> float:
        t = time.perf_counter()
        paged = escalation.tick(now=at)
        took = time.perf_counter() - t
        print(f"{label:<44} {took * 1000:7.0f} ms  ({paged} pages)")
        assert paged == expect, (paged, expect)
        return took

    first = timed("tick paging level 1 of all 1,000", now + timedelta(seconds=1), 1000)
    idle = [timed("tick with nothing due (the usual beat)", now + timedelta(minutes=2), 0)]
    idle += [timed("tick with nothing due, again", now + timedelta(minutes=3), 0)]
    second = timed("tick escalating all 1,000 to level 2", now + timedelta(minutes=16), 1000)
    timed("tick after the last level (nothing due)", now + timedelta(minutes=40), 0)
    ok = max(idle) <= 1.0 and max(first, second) <= 1.0
    print(
        f"goal: the beat's tick <= 1 s: {'met' if ok else 'NOT met'} (usual tick); paging 1,000 "
        f"incidents at once {'met' if max(first, second) <= 1.0 else 'NOT met'} "
        f"({max(first, second):.2f} s)"
    )
    return ok


# --- Webhooks to a slow receiver -----------------------------------------------------------------


class SlowReceiver:
    def __init__(self, secret: str, delay: float = 1.0) -> None:
        from monitoring.oncall import channels

        self.ids: set[int] = set()
        self.bad = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802
                import json

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(delay)
                ok = channels.verify_signature(
                    secret,
                    body,
                    self.headers.get(channels.SIGNATURE_HEADER, ""),
                    self.headers.get(channels.TIMESTAMP_HEADER, ""),
                )
                with lock:
                    if ok:
                        receiver.ids.add(json.loads(body)["id"])
                    else:
                        receiver.bad += 1
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

        ThreadingHTTPServer.request_queue_size = 1024
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


class FastTarget:
    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


def worker(queue: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "releasecenter",
            "worker",
            "-Q",
            queue,
            "-n",
            f"{queue}@%h",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=WARNING",
            *extra,
        ],
        cwd=ROOT,
        env=env,
    )


def run_checks(probes: list, queue: str) -> list[float]:
    """Ask the checks worker to run each probe now; how long until its result is stored."""
    from monitoring import tasks as monitoring_tasks
    from monitoring.models import Check

    lateness = []
    for check in probes:
        token = uuid.uuid4()
        Check.objects.filter(pk=check.pk).update(run_request_token=token, last_run_at=None)
        asked = time.monotonic()
        monitoring_tasks.run_requested.apply_async((check.pk, str(token), None), queue=queue)
        while not Check.objects.filter(pk=check.pk, last_run_at__isnull=False).exists():
            if time.monotonic() - asked > 60:
                break
            time.sleep(0.01)
        lateness.append((time.monotonic() - asked) * 1000)
    return lateness


def bench_webhooks(deliveries: int = 500) -> bool:
    from django.db import transaction

    from monitoring import services as monitoring
    from monitoring.models import EnvironmentMonitoring
    from monitoring.oncall import channels, tasks
    from monitoring.oncall.models import ChannelMessage

    secret = "bench-signing-secret-0123456789"
    receiver = SlowReceiver(secret)
    target = FastTarget()
    admin, admin_m, project, production = make_project("webhook-bench")
    EnvironmentMonitoring.objects.create(environment=production, allow_list="127.0.0.1")
    channel, _ = channels.create_channel(
        admin,
        admin_m,
        name="slow",
        kind="webhook",
        url=receiver.url("/hook"),
        secret=secret,
        address_environment="production",
    )
    probes = [
        monitoring.create_check(
            admin, admin_m, environment=production, name=f"probe {i}", url=target.url(f"/{i}")
        )
        for i in range(20)
    ]
    prefix = f"bench-{os.getpid()}-"
    notify_queue, checks_queue = prefix + "notifications", prefix + "checks"
    procs = [
        worker(notify_queue, "--pool=threads", "--concurrency=50"),
        worker(checks_queue, "--pool=solo"),
    ]
    try:
        time.sleep(6)  # the workers connect
        baseline = run_checks(probes, checks_queue)
        with transaction.atomic():
            messages = channels.send(
                project,
                event="bench",
                subject="bench",
                text="bench",
                data={},
                channels=[channel] * deliveries,
            )
        ids = [m.pk for m in messages]
        started = time.monotonic()
        for pk in ids:
            tasks.deliver_notification_message.apply_async((pk,), queue=notify_queue)
        time.sleep(2)  # every notification thread is now waiting on the slow receiver
        lateness = run_checks(probes, checks_queue)
        print(
            f"webhooks: {deliveries} to a receiver answering in 1 s, notifications worker "
            f"threads x50; meanwhile 20 health checks on the checks queue"
        )
        print(f"health check, request to result, idle:        {percentiles(baseline)}")
        print(f"health check, request to result, during 500:  {percentiles(lateness)}")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            sent = ChannelMessage.objects.filter(pk__in=ids, status="sent").count()
            if sent == deliveries:
                break
            time.sleep(0.5)
        took = time.monotonic() - started
        sent = ChannelMessage.objects.filter(pk__in=ids, status="sent").count()
        print(
            f"delivered {sent}/{deliveries} (verified by the receiver: {len(receiver.ids)}, "
            f"bad signatures: {receiver.bad}) in {took:.1f} s"
        )
        ok = sent == deliveries == len(receiver.ids) and p95(lateness) < max(
            1000, 2 * p95(baseline)
        )
        print(f"goal: all delivered, checks not delayed: {'met' if ok else 'NOT met'}")
        return ok
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["status", "tick", "webhooks"])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    recreate_database(os.environ["DATABASE_URL"])

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    results = []
    if args.only in (None, "status"):
        results.append(bench_status(args.requests))
    if args.only in (None, "tick"):
        results.append(bench_tick())
    if args.only in (None, "webhooks"):
        results.append(bench_webhooks())
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
