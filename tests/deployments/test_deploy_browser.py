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


def _step_states(page) -> dict[str, str]:  # noqa: ANN001
    return page.eval_on_selector_all(
        "[data-step-id]",
        "els => Object.fromEntries(els.map(e => [e.dataset.stepId, e.textContent]))",
    )


def test_a_failed_deployment_ends_live_as_a_reload_shows_it_and_a_rollback_adds_no_time(
    browser, start_web, start_worker, start_sim, personas
):
    """Watched live to its failure, the page ends as a reload renders it: no step left "Pending",
    no "Deploying ..." line, no promise of a next tier; tiers never started say so instead of
    "0/0". A manual rollback afterwards does not stretch the deployment's end or its duration."""
    from deployments.models import Deployment

    from .jobs_helpers import add_tier

    add_tier(personas, "worker", 3)
    add_tier(personas, "mailer", 3)
    sim = start_sim(rollout_seconds=0.5, progress_deadline_seconds=2)
    configure(personas, sim)
    approved_release(personas, version="1.4.0-bad")
    personas.member.set_password("member-password-2026")
    personas.member.save()
    server = start_web()
    start_worker()
    page = login_page(browser, server.url, "mia-member", "member-password-2026")
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{server.url}/p/{personas.project.slug}/environments/staging/")
    page.click("[data-release='1.4.0-bad'] [data-action=deploy]")
    page.wait_for_url("**/deployments/*/")
    url = page.url
    page.wait_for_selector("[data-deployment-status=failed]", timeout=60000)
    text = page.inner_text("main")
    live = _step_states(page)
    assert "Pending" not in live.values(), live
    assert "Deploying" not in text
    assert "the next tier starts" not in text
    assert "0/0" not in page.inner_text("tr[data-service=worker]")
    assert "not rolled out" in page.inner_text("tr[data-service=worker]")
    page.reload()
    assert _step_states(page) == live
    assert page.inner_text("main") == text

    deployment = Deployment.objects.get(version="1.4.0-bad")
    ended, took = deployment.finished_at, deployment.took
    page.click("[data-action=rollback]")
    page.wait_for_url(lambda u: u != url)
    page.wait_for_selector("[data-deployment-status=succeeded]", timeout=60000)
    deployment.refresh_from_db()
    assert deployment.status == "rolled_back"
    assert deployment.finished_at == ended
    page.goto(f"{server.url}/p/{personas.project.slug}/deployments/")
    assert page.inner_text(f"tr[data-deployment='{deployment.pk}'] td:last-child") == took
    page.context.close()
