"""End to end: a person presses "Run now" in chromium, a real Celery worker runs the check
against a target on 127.0.0.1, and the result arrives on the open page without a reload."""

from __future__ import annotations

import subprocess
import sys

import pytest

from monitoring.lib.testing import TargetServer
from tests.conftest import ROOT, login_page

from .support import Switchable, allow, make_check


@pytest.mark.browser
@pytest.mark.celery_worker
def test_run_now_result_arrives_live(browser, start_web, celery_worker, personas):
    switch = Switchable(200)
    with TargetServer({"/switch": switch}) as target:
        allow(personas.staging)
        check = make_check(
            personas, target.url("/switch"), name="api health", assertions=['$.status == "ok"']
        )
        server = start_web()
        personas.member.set_password("member-password-2026")
        personas.member.save()
        page = login_page(browser, server.url, "mia-member", "member-password-2026")
        page.goto(f"{server.url}/p/shop/health/checks/{check.pk}/")
        page.wait_for_selector("[data-live-state=open]", timeout=10000)
        assert page.locator("[data-check-status]").get_attribute("data-check-status") == "unknown"

        page.click("[data-run-now]")
        page.wait_for_selector("[data-check-status=passing]", timeout=30000)
        assert page.locator("article.result.passed").count() == 1
        assert target.paths() == ["/switch"]

        switch.status = 503
        page.click("[data-run-now]")
        page.wait_for_selector("[data-check-status=failing]", timeout=30000)
        text = page.locator("#check-live").inner_text()
        assert "HTTP 503" in text and "expected" in text
        assert page.locator("svg.chart circle").count() == 1  # the failed run, marked red
        # The Health page shows the failing cell.
        page.goto(f"{server.url}/p/shop/health/")
        assert page.locator("td.cell-failing").count() == 1
        page.context.close()


def test_schema_builds_without_warnings_from_monitoring():
    completed = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--file", "/dev/null", "--validate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "releasecenter.settings_test"},
    )
    assert completed.returncode == 0, completed.stderr
    mine = [
        line
        for line in completed.stderr.splitlines()
        if "monitoring" in line.lower() or "check" in line.lower() or "suite" in line.lower()
    ]
    assert mine == [], mine
