"""The Health page of a big project: 300 services x 4 environments and 5 million stored results.

Goal: server p95 <= 100 ms. The page must read current state, uptime (24 h / 7 d / 30 d) and
sparklines from check rows and rollups, never by scanning raw results, so its cost does not
depend on how many results are stored.

What it does, on PostgreSQL (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/
rc_bench_health; the database is created if missing):
1. migrates, then (once; later runs reuse the data) creates a project with 4 environments,
   300 services and one health check per cell (1,200 checks), and fills 5,000,000 results
   spread over the last 30 days with INSERT ... SELECT generate_series, then their hourly and
   daily rollups with INSERT ... SELECT ... GROUP BY, as the app would have written them;
2. requests every page of the grid through Django's full stack (middleware, session, view,
   templates) in this process, several rounds, and prints the server-side p50 / p95 / max and
   the number of SQL queries per page; then the same for a check's page (chart of its last 24
   hours, failures).

The grid is paginated by design: one page holds GRID_PAGE_SIZE (25) services across every
environment, so the 300 x 4 grid is 12 pages of 25 x 4 = 100 cells, and no request ever draws
all 1,200 cells. A user waits for one page at a time, so the goal is judged on every page alike:
the p95 over all pages, and the p95 of the heaviest single page (the one with the most checks
to draw; page 1 also carries the environment-wide row) timed on its own. Both must be within
the goal. The script prints what one page holds.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/rc_bench_health \\
        .venv/bin/python bench/bench_health_page.py [--rounds 20] [--results 5000000]

A small --results (e.g. 20000) on a database of its own checks the script quickly; the goal
is about 5,000,000.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import benchdb  # the scripts run from bench/, which is first on sys.path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/rc_bench_health"
SLUG = "bench-health"
ENVIRONMENTS = ["dev", "staging", "canary", "production"]
SERVICES = 300
GOAL_P95_MS = 100.0


def setup_django() -> None:
    benchdb.setup_django(DEFAULT_DB)


def generate(total_results: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from monitoring.models import Check, CheckResult, EnvironmentMonitoring
    from releasecenter.models import Environment, Membership, Project, Service

    project = Project.objects.filter(slug=SLUG).first()
    if project is not None:
        complete = (
            CheckResult.objects.filter(health_check__project=project).count() >= total_results
            and not Check.objects.filter(project=project, status="unknown").exists()
        )
        if complete:
            print(f"reusing {SLUG}: data already present", flush=True)
            return
        print(f"removing an incomplete {SLUG} …", flush=True)
        with connection.cursor() as cursor:
            for table in ("monitoring_checkresult", "monitoring_checkrollup"):
                cursor.execute(
                    f"DELETE FROM {table} WHERE health_check_id IN "  # noqa: S608
                    "(SELECT id FROM monitoring_check WHERE project_id = %s)",
                    [project.pk],
                )
        project.delete()
    started = time.perf_counter()
    User = get_user_model()  # noqa: N806
    user, _ = User.objects.get_or_create(username="bench-health-viewer")
    with transaction.atomic():
        project = Project.objects.create(slug=SLUG, name="Bench health")
        Membership.objects.create(user=user, project=project, role="viewer")
        envs = Environment.objects.bulk_create(
            Environment(project=project, name=n, order=i * 10) for i, n in enumerate(ENVIRONMENTS)
        )
        EnvironmentMonitoring.objects.bulk_create(
            EnvironmentMonitoring(environment=e, allow_list="127.0.0.1") for e in envs
        )
        services = Service.objects.bulk_create(
            Service(project=project, name=f"svc-{i:03}", tier=1 + i % 3) for i in range(SERVICES)
        )
        Check.objects.bulk_create(
            Check(
                project=project,
                environment=e,
                service=s,
                name=f"{s.name} health",
                url=f"http://127.0.0.1:8001/_services/{e.name}/{s.name}/health",
                assertions=[{"type": "status", "equals": 200}],
                interval_seconds=600,
            )
            for e in envs
            for s in services
        )
    checks = len(envs) * len(services)
    per_check = -(-total_results // checks)  # at least total_results in all
    step_seconds = 30 * 86400 // per_check
    print(
        f"{checks} checks; inserting {per_check * checks:,} results, one per {step_seconds} s …",
        flush=True,
    )
    with connection.cursor() as cursor:
        # Bulk load: skip the deferred foreign-key triggers (the rows reference checks made
        # just above), as a restore would.
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(
            """
            INSERT INTO monitoring_checkresult
                (health_check_id, started_at, passed, status_code, latency_ms, error,
                 failures, excerpt, details, trigger)
            SELECT s.id,
                   now() - make_interval(secs => s.g * %(step)s + (s.id %% %(step)s)),
                   NOT s.failed,
                   CASE WHEN s.failed THEN 503 ELSE 200 END,
                   round((15 + random() * 60 + (s.id %% 40))::numeric, 3),
                   '',
                   CASE WHEN s.failed THEN
                     '[{"message": "status 503, expected 200", "expected": 200, "actual": 503}]'
                   ELSE '[]' END::jsonb,
                   CASE WHEN s.failed THEN '{"status": "unavailable"}' ELSE '{"status": "ok"}' END,
                   '[]'::jsonb,
                   'schedule'
            FROM (
                -- One draw per row: 0.4 %% of runs fail, a few checks fail for a stretch.
                SELECT c.id, g, random() < 0.004 OR (c.id %% 97 = 0 AND g < 30) AS failed
                FROM monitoring_check c CROSS JOIN generate_series(0, %(n)s - 1) AS g
                WHERE c.project_id = %(project)s
            ) AS s
            """,
            {"step": step_seconds, "n": per_check, "project": project.pk},
        )
        print(f"  results in {time.perf_counter() - started:.0f} s; rollups …", flush=True)
        for span in ("hour", "day"):
            cursor.execute(
                f"""
                INSERT INTO monitoring_checkrollup
                    (health_check_id, span, start, runs, failures, latency_count,
                     latency_sum_ms, latency_max_ms)
                SELECT r.health_check_id, %(span)s,
                       date_trunc('{span}', r.started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                       count(*), count(*) FILTER (WHERE NOT r.passed),
                       count(r.latency_ms) FILTER (WHERE r.status_code IS NOT NULL),
                       coalesce(sum(r.latency_ms) FILTER (WHERE r.status_code IS NOT NULL), 0),
                       coalesce(max(r.latency_ms), 0)
                FROM monitoring_checkresult r
                JOIN monitoring_check c ON c.id = r.health_check_id
                WHERE c.project_id = %(project)s
                GROUP BY 1, 3
                """,  # noqa: S608 - span is one of two literals
                {"span": span, "project": project.pk},
            )
        # Current state, as the recorder leaves it: from each check's newest result.
        cursor.execute(
            """
            UPDATE monitoring_check c
               SET (status, status_changed_at, last_run_at, last_passed, last_status_code,
                    last_latency_ms, last_summary) = (
                   SELECT CASE WHEN r.passed THEN 'passing' ELSE 'failing' END, r.started_at,
                          r.started_at, r.passed, r.status_code, r.latency_ms,
                          CASE WHEN r.passed THEN 'HTTP 200' ELSE 'status 503, expected 200' END
                     FROM monitoring_checkresult r
                    WHERE r.health_check_id = c.id
                    ORDER BY r.started_at DESC
                    LIMIT 1)
             WHERE c.project_id = %(project)s
            """,
            {"project": project.pk},
        )
        cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute("ANALYZE monitoring_checkresult")
        # What autovacuum would have done by now; index-only scans need the visibility map.
        cursor.execute("VACUUM ANALYZE monitoring_checkrollup")
        cursor.execute("ANALYZE monitoring_check")
    print(f"generated in {time.perf_counter() - started:.0f} s")


def timed(client, paths: list[str], rounds: int) -> tuple[list[float], list[float], dict]:  # noqa: ANN001
    """Wall time of each request (what a browser waits for, minus the network) and this
    process's CPU time for it (Python's share, less sensitive to other load on the machine)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for path in paths:  # warm-up: connections, template caches
        assert client.get(path).status_code == 200, path
    walls, cpus = [], []
    for _ in range(rounds):
        for path in paths:
            started, cpu = time.perf_counter(), time.process_time()
            response = client.get(path)
            walls.append((time.perf_counter() - started) * 1000)
            cpus.append((time.process_time() - cpu) * 1000)
            assert response.status_code == 200, path
    queries = {}
    for path in paths:
        with CaptureQueriesContext(connection) as captured:
            client.get(path)
        queries[path] = len(captured)
    return walls, cpus, queries


def grid_pages(slug: str) -> list[tuple[int, int, int]]:
    """(page number, services, checks) of each page, paginated exactly as the view does."""
    from django.core.paginator import Paginator
    from django.db.models import Count

    from monitoring.models import Check
    from monitoring.views import GRID_PAGE_SIZE
    from releasecenter.models import Project

    project = Project.objects.get(slug=slug)
    per_service = dict(
        Check.objects.filter(project=project, parent__isnull=True)
        .values_list("service_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    paginator = Paginator(project.services.order_by("tier", "name"), GRID_PAGE_SIZE)
    pages = []
    for number in paginator.page_range:
        ids = [s.pk for s in paginator.page(number).object_list]
        checks = sum(per_service.get(pk, 0) for pk in ids)
        if number == 1:
            checks += per_service.get(None, 0)  # the environment-wide row
        pages.append((number, len(ids), checks))
    return pages


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * share + 0.5) - 1)]


def report(label: str, walls: list[float], cpus: list[float], queries: dict[str, int]) -> float:
    p95 = percentile(walls, 0.95)
    print(
        f"{label:<30} n={len(walls):<4} wall p50 {statistics.median(walls):6.1f} ms  "
        f"p95 {p95:6.1f} ms  max {max(walls):6.1f} ms | cpu p50 {statistics.median(cpus):5.1f} "
        f"p95 {percentile(cpus, 0.95):5.1f} ms | queries/page {min(queries.values())}"
        f"–{max(queries.values())}"
    )
    return p95


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--results", type=int, default=5_000_000)
    args = parser.parse_args()
    setup_django()
    generate(args.results)

    from django.contrib.auth import get_user_model
    from django.test import Client

    from monitoring.models import Check, CheckResult
    from releasecenter.models import Environment

    # Through the whole middleware stack, as a browser on the same host would arrive.
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(get_user_model().objects.get(username="bench-health-viewer"))
    stored = CheckResult.objects.filter(health_check__project__slug=SLUG).count()
    print(
        f"stored results: {stored:,}   checks: {Check.objects.filter(project__slug=SLUG).count()}"
    )

    layout = grid_pages(SLUG)
    environments = Environment.objects.filter(project__slug=SLUG).count()
    services = sum(n for _, n, _ in layout)
    # The heaviest page: most checks to draw; on a tie the first (it has the extra row).
    heaviest, heavy_services, heavy_checks = max(layout, key=lambda p: (p[2], -p[0]))
    print(
        f"grid: {services} services x {environments} environments, paginated by design in "
        f"{len(layout)} pages; one page holds {layout[0][1]} services x {environments} "
        f"environments = {layout[0][1] * environments} cells ({layout[0][2]} checks on page 1)"
    )
    print(
        f"heaviest page: {heaviest}, {heavy_services} services x {environments} environments, "
        f"{heavy_checks} checks"
    )
    pages = [f"/p/{SLUG}/health/?page={n}" for n, _, _ in layout]
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    one_page = f"({layout[0][1]} svc x {environments} env)"
    walls, cpus, queries = timed(client, pages, args.rounds)
    grid_p95 = report(f"Health page, every page {one_page}", walls, cpus, queries)
    # timed() goes round the pages in order, so the n-th wall belongs to page n % len(pages).
    by_page = {n: percentile(walls[i :: len(pages)], 0.95) for i, (n, _, _) in enumerate(layout)}
    slowest = max(by_page, key=by_page.__getitem__)
    print(f"   slowest page measured: {slowest} (p95 {by_page[slowest]:.1f} ms)")
    # As many requests of the heaviest page alone as all pages got together above.
    heavy_p95 = report(
        f"Health page, heaviest (page {heaviest})",
        *timed(client, [pages[heaviest - 1]], args.rounds * len(pages)),
    )
    sample = list(
        Check.objects.filter(project__slug=SLUG).order_by("?").values_list("pk", flat=True)[:10]
    )
    check_pages = [f"/p/{SLUG}/health/checks/{pk}/" for pk in sample]
    report("Check page (chart, failures)", *timed(client, check_pages, max(1, args.rounds // 2)))
    for label, p95 in (("every page", grid_p95), (f"heaviest page ({heaviest})", heavy_p95)):
        verdict = "PASS" if p95 <= GOAL_P95_MS else "FAIL"
        print(
            f"{verdict}  Health page server p95, {label}: {p95:.1f} ms "
            f"(goal <= {GOAL_P95_MS:.0f} ms; {stored:,} stored results)"
        )
    return 0 if max(grid_p95, heavy_p95) <= GOAL_P95_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
