"""Run page of a 77-item checklist in a real browser. Goals: under 80 KiB of HTML and under
300 ms to interactive (median).

Builds its own PostgreSQL database (DATABASE_URL, default rc_bench_run_page: dropped and made
again) with a run of our own 77-item gate runbook (checklists.benchdata.gated_runbook_markdown:
eleven gates with severities, inline code, configuration blocks, nested and pre-ticked items)
and, when ../shared/runbooks/commerce-production-gates.md is beside the clone, a run of that
runbook too. It starts uvicorn on 127.0.0.1 and, for each run, as an engineer who may tick:

- the size of the page's HTML, and the server's answer time over --requests GETs (httpx);
- Debian's chromium through Playwright loading the page --loads times (fresh page, warm HTTP
  cache for the static files), read from the Navigation Timing entry: time to the response's
  last byte, to DOM interactive, and to interactive: DOMContentLoaded's handlers done, which is
  when the run page's script has wired the items (it then marks the run data-ready); and the
  main-thread work of each load from Chromium's own counters (CPU spent on the page, which a
  busy machine inflates far less than the wall-clock times: compare the load averages printed).

    .venv/bin/python bench/bench_run_page.py [--requests 50] [--loads 15]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchdb import recreate_database, session_cookie, start_web  # noqa: E402  bench/ is first on sys.path

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rc_bench_run_page")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "releasecenter.settings_test")
os.environ.setdefault("LOG_LEVEL", "WARNING")

COMMERCE = ROOT.parent / "shared" / "runbooks" / "commerce-production-gates.md"
CHROMIUM = "/usr/bin/chromium"
SIZE_GOAL_KIB = 80.0
INTERACTIVE_GOAL_MS = 300.0

TIMING = """() => {
  const n = performance.getEntriesByType("navigation")[0];
  return {response: n.responseEnd, dom: n.domInteractive, interactive: n.domContentLoadedEventEnd,
          load: n.loadEventEnd, bytes: n.decodedBodySize,
          ready: document.querySelector("[data-run]").dataset.ready === "1"};
}"""


def setup_django() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def build() -> tuple[object, list[tuple[str, int]]]:
    from django.contrib.auth import get_user_model

    from checklists import services
    from checklists.benchdata import gated_runbook_markdown
    from releasecenter.models import Membership, Project

    user = get_user_model().objects.create_user("bench-engineer", password=None)
    project = Project.objects.create(slug="bench-run-page", name="Bench run page")
    Membership.objects.create(user=user, project=project, role="engineer")
    env = project.environments.create(name="production", kind="production", order=20)
    sources = [("our 77-item gate runbook", gated_runbook_markdown())]
    if COMMERCE.exists():
        sources.append(("commerce-production-gates.md", COMMERCE.read_bytes()))
    else:
        print(f"({COMMERCE} is not here: its run is left out)")
    runs = []
    for label, text in sources:
        template = services.import_runbook(user, project, text, name=label).template
        run = services.create_run(user, template, environment=env)
        runs.append((label, f"/p/{project.slug}/checklists/runs/{run.pk}/"))
    return user, runs


def server_side(base: str, cookie: str, url: str, requests: int) -> tuple[int, int, list[float]]:
    import httpx
    from django.conf import settings

    with httpx.Client(base_url=base, cookies={settings.SESSION_COOKIE_NAME: cookie}) as http:
        for _ in range(5):
            response = http.get(url)
            assert response.status_code == 200, response.status_code
        ms = []
        for _ in range(requests):
            started = time.perf_counter()
            response = http.get(url)
            ms.append((time.perf_counter() - started) * 1000)
        return len(response.content), response.text.count('class="run-item '), ms


def main_thread(cdp) -> dict[str, float]:  # noqa: ANN001
    """Chromium's counters of the page's main-thread work, in seconds: all tasks, script, style
    and layout. Unlike wall-clock times they hardly grow when other processes take the CPU."""
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return {
        "tasks": metrics["TaskDuration"],
        "script": metrics["ScriptDuration"],
        "style": metrics["RecalcStyleDuration"],
        "layout": metrics["LayoutDuration"],
    }


def in_browser(base: str, cookie: str, url: str, loads: int) -> list[dict]:
    from django.conf import settings
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": base}])
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        page.goto(base + url)  # warm: static files cached, as for someone who works here
        for _ in range(loads):
            page.goto("about:blank")
            before = main_thread(cdp)
            page.goto(base + url, wait_until="load")
            page.wait_for_selector("[data-run][data-ready='1']", state="attached")
            timing = page.evaluate(TIMING)
            after = main_thread(cdp)
            timing.update({k: (after[k] - before[k]) * 1000 for k in after})
            results.append(timing)
        browser.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--loads", type=int, default=15)
    args = parser.parse_args()
    print(
        f"database {os.environ['DATABASE_URL']} (recreated), {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} before"
    )
    recreate_database(os.environ["DATABASE_URL"])
    setup_django()
    user, runs = build()
    cookie = session_cookie(user)
    web, base = start_web()
    failed = []
    try:
        for label, url in runs:
            size, items, ms = server_side(base, cookie, url, args.requests)
            timings = in_browser(base, cookie, url, args.loads)

            def median(key: str, timings: list[dict] = timings) -> float:
                return statistics.median(t[key] for t in timings)

            kib = size / 1024
            interactive = median("interactive")
            size_ok, time_ok = kib < SIZE_GOAL_KIB, interactive < INTERACTIVE_GOAL_MS
            print(f"run page of {label}: {items} items")
            print(
                f"  HTML {kib:6.1f} KiB (goal < {SIZE_GOAL_KIB:g} KiB)  "
                f"{'OK' if size_ok else 'OVER'}"
            )
            print(
                f"  server answer    median {statistics.median(ms):6.1f} ms  "
                f"max {max(ms):6.1f} ms  (n={len(ms)})"
            )
            print(
                f"  browser (n={len(timings)}, medians): last byte {median('response'):6.1f} ms, "
                f"DOM interactive {median('dom'):6.1f} ms, load {median('load'):6.1f} ms"
            )
            print(
                f"  time to interactive median {interactive:6.1f} ms  "
                f"max {max(t['interactive'] for t in timings):6.1f} ms "
                f"(goal < {INTERACTIVE_GOAL_MS:g} ms)  {'OK' if time_ok else 'OVER'}"
            )
            print(
                f"  main-thread work (medians): all tasks {median('tasks'):6.1f} ms, script "
                f"{median('script'):6.1f} ms, style {median('style'):6.1f} ms, layout "
                f"{median('layout'):6.1f} ms"
            )
            if not all(t["ready"] for t in timings):
                print("  the page's script did not mark the run ready")
                time_ok = False
            if not (size_ok and time_ok):
                failed.append(label)
    finally:
        web.send_signal(signal.SIGTERM)
        try:
            web.wait(timeout=15)
        except subprocess.TimeoutExpired:
            web.kill()
    print(f"load average {os.getloadavg()[0]:.1f} after")
    print("all goals met" if not failed else f"goals missed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
