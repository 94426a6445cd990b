"""Incidents: the incident page with 5,000 timeline entries and 50 suspects (goal: server p95
<= 100 ms, a query count that does not grow with the entries), a timeline entry reaching another
viewer's event stream (goal p95 <= 100 ms with Redis), and the beat's SLA evaluation of 1,000
open incidents (goal <= 1 s).

Builds its own PostgreSQL database (DATABASE_URL, default rc_bench_incidents: dropped and made
again). The page: one production incident whose merged timeline holds 2,500 entries written by
people and 2,500 that the system saw in the hour before it started (50 deployments of 8 services
with their steps, and check state changes), rendered through Django's request handler N times.
The live figure starts uvicorn on that database; one person posts entries through the service
while another's session follows /events/stream?topic=incident:ID, as the incident page does.
The SLA figure evaluates 1,000 open incidents twice: when none is due, and when all of them
breach both clocks at once (the worst case).

    .venv/bin/python bench/bench_incidents.py [--requests 200] [--posts 100] [--only page|live|sla]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchdb import recreate_database, start_web  # noqa: E402  bench/ is first on sys.path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "releasecenter.settings_test")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rc_bench_incidents")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(len(ordered) * 0.95) - 1)]


def build():  # noqa: ANN201
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from deployments.models import Deployment, DeploymentStep, Release
    from monitoring.incidents import services as incidents
    from releasecenter import services as core
    from releasecenter.models import Membership

    User = get_user_model()  # noqa: N806
    admin = User.objects.create_user("bench-admin", password="x")
    viewer = User.objects.create_user("bench-viewer", password="x")
    project = core.create_project(admin, slug="bench-incidents", name="Bench incidents")
    admin_m = Membership.objects.get(user=admin, project=project)
    core.add_member(admin, admin_m, username="bench-viewer", role="viewer")
    production = core.create_environment(admin, admin_m, name="production", kind="production")
    services = [
        core.create_service(admin, admin_m, name=f"svc-{i}", tier=1 + i // 3) for i in range(8)
    ]
    now = timezone.now()
    from releasecenter.models import Project

    Project.objects.filter(pk=project.pk).update(created_at=now - timedelta(days=30))
    admin_m.project.refresh_from_db()
    started = now - timedelta(hours=2)
    incident = incidents.open_incident(
        admin,
        admin_m,
        title="Checkout down",
        severity="P1",
        environments=[production],
        services=services[:2],
        summary="Everything **red**.",
        started_at=started,
    )
    # The system: 50 deployments in the hour before (each 3 moments + 8 services x 3 steps =
    # 27 entries: 1,350) and 1,150 check state changes: 2,500.
    release = Release.objects.create(project=project, version="5.0.0", commit_sha="abcdef12")
    window = started - timedelta(minutes=59)
    for n in range(50):
        at = window + timedelta(seconds=60 * n)
        d = Deployment.objects.create(
            project=project,
            release=release,
            environment=production,
            strategy="kubernetes",
            status="succeeded",
            version=f"5.0.{n}",
            requested_by=admin,
            created_at=at,
            status_changed_at=at + timedelta(seconds=50),
            started_at=at + timedelta(seconds=1),
            finished_at=at + timedelta(seconds=50),
        )
        DeploymentStep.objects.bulk_create(
            [
                DeploymentStep(
                    deployment=d,
                    service=s,
                    service_name=s.name,
                    tier=s.tier,
                    kind=kind,
                    status="succeeded",
                    started_at=at + timedelta(seconds=2 + k),
                    finished_at=at + timedelta(seconds=3 + k),
                    detail={"version_before": f"5.0.{n - 1}"} if kind == "snapshot" else {},
                )
                for s in services
                for k, kind in enumerate(["snapshot", "apply", "wait", "verify"])
            ]
        )
    return admin, viewer, project, incident


def add_volume(admin, project, incident) -> None:  # noqa: ANN001
    """2,500 entries by people and 1,150 check state changes: the timeline grows to 5,000."""
    from monitoring.incidents.models import TimelineEntry
    from monitoring.models import Check
    from releasecenter.models import AuditEvent, Environment

    production = Environment.objects.get(project=project, name="production")
    started = incident.started_at
    window = started - timedelta(minutes=59)
    service = project.services.first()
    # 2,500 entries written by people, spread over the two hours since it started (added after
    # the page's query count was taken with the deployments alone; see bench_page).
    TimelineEntry.objects.bulk_create(
        [
            TimelineEntry(
                incident=incident,
                kind=["note", "update", "action", "decision", "hypothesis"][i % 5],
                source="person",
                text=f"Entry {i}: looked at the **dashboards** again",
                author=admin,
                occurred_at=started + timedelta(seconds=2.8 * i),
            )
            for i in range(2500)
        ]
    )
    check = Check.objects.create(
        project=project, environment=production, service=service, name="svc-0 health"
    )
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(
                topic=project.topic,
                verb="check.failing" if i % 2 == 0 else "check.recovered",
                project=project,
                object_type="monitoring.check",
                object_id=str(check.pk),
                data={
                    "check_id": check.pk,
                    "name": check.name,
                    "environment": "production",
                    "summary": "HTTP 500",
                },
                created_at=window + timedelta(seconds=3 * i),
            )
            for i in range(1150)
        ]
    )


def _queries(client, url: str) -> int:  # noqa: ANN001
    from django.db import connection

    seen: list[str] = []

    def count(execute, sql, params, many, context):  # noqa: ANN001, ANN202
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        assert client.get(url).status_code == 200
    return len(seen)


def bench_page(admin, project, incident, requests: int) -> bool:  # noqa: ANN001
    from django.db import connection
    from django.test import Client

    from monitoring.incidents import selectors, timeline

    before_client = Client(HTTP_HOST="localhost")
    before_client.force_login(admin)
    page_url = f"/p/{project.slug}/incidents/{incident.number}/"
    before_client.get(page_url)
    before_items = len(timeline.merged(incident, limit=None)[0])
    before_queries = _queries(before_client, page_url)
    add_volume(admin, project, incident)

    items, more = timeline.merged(incident, limit=None)
    people = sum(1 for i in items if i.source == "person")
    suspects = selectors.suspects(incident)
    client = Client(HTTP_HOST="localhost")
    client.force_login(admin)
    url = f"/p/{project.slug}/incidents/{incident.number}/"
    for _ in range(10):
        assert client.get(url).status_code == 200
    queries: list[str] = []

    def count(execute, sql, params, many, context):  # noqa: ANN001, ANN202
        queries.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        assert client.get(url).status_code == 200
    samples, cpu = [], []
    for _ in range(requests):
        t0, c0 = time.perf_counter(), time.process_time()
        response = client.get(url)
        samples.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        assert response.status_code == 200
    page_p95 = p95(samples)
    print(
        f"incident page: {len(items)} timeline entries ({people} by people, "
        f"{len(items) - people} by the system), {len(suspects)} suspect deployments"
    )
    print(
        f"requests: {len(samples)}  queries per page: {len(queries)} "
        f"(the same page at {before_items} entries: {before_queries})"
    )
    print(
        f"latency ms: p50 {statistics.median(samples):.1f}  p95 {page_p95:.1f}  "
        f"max {max(samples):.1f}"
    )
    ok = page_p95 <= 100 and len(queries) == before_queries
    print(f"CPU ms of the web process: p50 {statistics.median(cpu):.1f}  p95 {p95(cpu):.1f}")
    print(f"machine load (1/5/15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"goal p95 <= 100 ms, constant query count: {'met' if ok else 'NOT met'}")
    return ok


def bench_live(admin, viewer, incident, posts: int) -> bool:  # noqa: ANN001
    import httpx
    from django.conf import settings
    from django.test import Client

    from monitoring.incidents import services as incidents
    from releasecenter.models import Membership

    django_client = Client()
    django_client.force_login(viewer)
    cookie = django_client.cookies[settings.SESSION_COOKIE_NAME].value
    from releasecenter import events

    # Where the incident page's stream starts: after what the page already shows.
    cursor = events.stream_cursor(incident.topic)
    proc, base = start_web()
    arrived: dict[int, float] = {}
    connected = threading.Event()
    done = threading.Event()

    def follow() -> None:
        try:
            with (
                httpx.Client(
                    base_url=base,
                    cookies={settings.SESSION_COOKIE_NAME: cookie},
                    timeout=httpx.Timeout(5, read=60),
                ) as client,
                client.stream(
                    "GET",
                    "/events/stream",
                    params={"topic": incident.topic, "last_event_id": cursor},
                ) as response,
            ):
                for text in response.iter_lines():
                    if text.startswith("retry:"):
                        connected.set()
                    if done.is_set():
                        return
                    if text.startswith("data: "):
                        data = json.loads(text[6:]).get("data") or {}
                        if data.get("entry_id"):
                            arrived.setdefault(int(data["entry_id"]), time.perf_counter())

        except httpx.HTTPError:
            if not done.is_set():
                raise

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    try:
        if not connected.wait(15):
            raise SystemExit("the event stream did not open")
        membership = Membership.objects.get(user=admin, project=incident.project)
        sent: dict[int, float] = {}
        for i in range(posts):
            t0 = time.perf_counter()
            entry = incidents.add_timeline_entry(
                admin, membership, incident, kind="note", text=f"live {i}"
            )
            sent[entry.pk] = t0
            deadline = time.monotonic() + 5
            while entry.pk not in arrived and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(0.02)
        samples = [(arrived[k] - t) * 1000 for k, t in sent.items() if k in arrived]
        lost = len(sent) - len(samples)
    finally:
        done.set()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            # An open event stream keeps uvicorn's graceful shutdown waiting.
            proc.kill()
            proc.wait()
    if not samples:
        print(f"live: none of {len(sent)} entries reached the stream")
        return False
    live_p95 = p95(samples)
    print(
        f"live: {len(samples)} entries posted by one person, seen on another viewer's stream "
        f"(Redis: {settings.REDIS_URL or 'off'}); lost {lost}"
    )
    print(
        f"latency ms (post through the service -> event on the stream): "
        f"p50 {statistics.median(samples):.1f}  p95 {live_p95:.1f}  max {max(samples):.1f}"
    )
    ok = live_p95 <= 100 and lost == 0
    print(f"goal p95 <= 100 ms: {'met' if ok else 'NOT met'}")
    return ok


def bench_sla(admin, project) -> bool:  # noqa: ANN001
    from django.utils import timezone

    from monitoring.incidents import services as incidents
    from monitoring.incidents.models import Incident
    from releasecenter.models import Environment

    now = timezone.now()
    env = Environment.objects.get(project=project, name="production")
    rows = Incident.objects.bulk_create(
        [
            Incident(
                project=project,
                number=10_000 + i,
                title=f"Load {i}",
                severity="P2",
                started_at=now,
                acknowledge_due_at=now + timedelta(hours=1),
                update_due_at=now + timedelta(hours=1),
            )
            for i in range(1000)
        ]
    )
    Incident.environments.through.objects.bulk_create(
        [Incident.environments.through(incident_id=r.pk, environment_id=env.pk) for r in rows]
    )
    open_count = Incident.objects.open().count()
    t0 = time.perf_counter()
    quiet = incidents.evaluate_sla(now)
    quiet_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    breached = incidents.evaluate_sla(now + timedelta(hours=2))
    all_s = time.perf_counter() - t0
    print(f"SLA evaluation: {open_count} open incidents")
    print(f"  nothing due: {quiet_s * 1000:.1f} ms ({quiet} breaches)")
    print(f"  all due at once: {all_s * 1000:.1f} ms ({breached} breaches recorded)")
    ok = quiet_s <= 1 and all_s <= 1
    print(f"goal <= 1 s: {'met' if ok else 'NOT met'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--posts", type=int, default=100)
    parser.add_argument("--only", choices=["page", "live", "sla"])
    args = parser.parse_args()
    recreate_database(os.environ["DATABASE_URL"])

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    admin, viewer, project, incident = build()
    results = []
    if args.only in (None, "page"):
        results.append(bench_page(admin, project, incident, args.requests))
    if args.only in (None, "live"):
        results.append(bench_live(admin, viewer, incident, args.posts))
    if args.only in (None, "sla"):
        results.append(bench_sla(admin, project))
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
