"""In a real browser: press Deploy on the environment page and watch per-service progress move
on the deployment page without reloading it."""

from __future__ import annotations

import pytest

from tests.conftest import login_page

from .jobs_helpers import approved_release, configure

pytestmark = [pytest.mark.browser, pytest.mark.celery_worker]


def test_press_deploy_and_watch_progress_move_live(
    browser, start_web, start_worker, start_sim, personas
):
    sim = start_sim(rollout_seconds=3.0)
    configure(personas, sim)
    approved_release(personas)
    personas.member.set_password("member-password-2026")
    personas.member.save()
    server = start_web()
    start_worker()
    page = login_page(browser, server.url, "mia-member", "member-password-2026")
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{server.url}/p/{personas.project.slug}/environments/staging/")
    page.click("[data-release='1.4.0'] [data-action=deploy]")
    page.wait_for_url("**/deployments/*/")
    page.wait_for_selector("[data-live-state=open]", timeout=10000)
    page.evaluate("window.__notReloaded = true")

    updated = page.locator("tr[data-service=api] [data-count=updated]")
    seen = []
    for _ in range(200):
        text = updated.inner_text()
        if not seen or seen[-1] != text:
            seen.append(text)
        if text == "2/2":
            break
        page.wait_for_timeout(50)
    # Each new replica showed up on its own, pushed by the worker through the event stream.
    assert seen[-1] == "2/2", seen
    assert "1/2" in seen, seen
    page.wait_for_selector("tr[data-service=web] [data-status=succeeded] >> nth=3", timeout=30000)
    page.wait_for_selector("[data-deployment-status=succeeded]", timeout=10000)
    assert page.evaluate("window.__notReloaded") is True
    log = page.locator("#deployment-log li")
    assert log.count() > 5
    assert "patched web to registry.example/web:1.4.0" in page.inner_text("#deployment-log")
    page.context.close()
