"""Accessibility of every main page, measured by axe-core (WCAG 2.1 A and AA, and axe's best
practices) in a real browser at desktop and phone width, on the seeded demo: no violation, and
no page wider than the window.

axe-core comes from tools/ (npm, pinned in tools/package.json); it is injected into each page
by a browser context that bypasses the Content-Security-Policy for that purpose only (the pages
allow no inline script, and an injected one is inline). One browser, one seeded dataset, one
login: every page is loaded and checked at both widths in one test.
"""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from tests.conftest import ROOT

AXE = ROOT / "tools" / "node_modules" / "axe-core" / "axe.min.js"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
WIDTHS = [(1280, 900), (390, 844)]

RUN_AXE = """async tags => {
  const result = await axe.run(document, {runOnly: {type: "tag", values: tags}});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 3).map(n => n.target.join(" ") + " :: " + n.failureSummary)
  }));
}"""
WIDTH = "() => [document.documentElement.scrollWidth, window.innerWidth]"
# The outermost elements that reach past the window's right edge, to say what makes a page wide.
TOO_WIDE = """() => {
  const limit = window.innerWidth;
  const scrolls = e => { for (let a = e.parentElement; a; a = a.parentElement) {
    if (["auto", "scroll", "hidden"].includes(getComputedStyle(a).overflowX)) { return true; } }
    return false; };
  const wide = [...document.querySelectorAll("body *")].filter(
    e => e.getBoundingClientRect().right > limit + 1 && !scrolls(e));
  const outer = wide.filter(e => !wide.includes(e.parentElement));
  return outer.slice(0, 4).map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") +
    (e.className && typeof e.className === "string" ? "." + e.className.trim().replace(/ +/g, ".") : "") +
    " " + Math.round(e.getBoundingClientRect().right) + " px");
}"""


def demo_deployment(project):  # noqa: ANN001, ANN201
    """A finished deployment of the demo release with steps and a log, written as rows (no
    worker runs here): the deployment page and the list need one to show."""
    from deployments.models import Deployment, DeploymentStep, Release

    release = Release.objects.get(project=project, version="1.4.0")
    staging = project.environments.get(name="staging")
    started = timezone.now() - timedelta(minutes=5)
    deployment = Deployment.objects.create(
        project=project,
        release=release,
        environment=staging,
        strategy="kubernetes",
        status="failed",
        version="1.4.0",
        reason="payment-service: rollout did not complete (ProgressDeadlineExceeded)",
        started_at=started,
        finished_at=started + timedelta(seconds=12),
    )
    seq = 0
    for service in project.services.order_by("tier", "name"):
        failed = service.name == "payment-service"
        for kind in DeploymentStep.ORDER:
            status = "succeeded" if service.tier == 1 and not failed else "skipped"
            if failed and kind in ("snapshot", "apply"):
                status = "succeeded"
            elif failed and kind == "wait":
                status = "failed"
            detail = {"desired": 2, "updated": 2, "available": 2} if kind == "wait" else {}
            DeploymentStep.objects.create(
                deployment=deployment,
                service_name=service.name,
                tier=service.tier,
                kind=kind,
                status=status,
                detail=detail if status != "skipped" else {},
            )
        for text in ("snapshot taken", "patched image to 1.4.0", "rollout complete 2/2"):
            seq += 1
            deployment.log_lines.create(seq=seq, service_name=service.name, text=text)
    return deployment


@pytest.fixture
def demo(transactional_db):  # noqa: ANN001, ANN201
    from checklists.models import ChecklistTemplate, Run, RunItem
    from deployments.models import Release
    from monitoring.models import Check
    from releasecenter.models import Project

    call_command("seed_demo", "--quiet-logins", stdout=io.StringIO())
    project = Project.objects.get(slug="acme-shop")
    deployment = demo_deployment(project)
    base = f"/p/{project.slug}/"
    template = ChecklistTemplate.objects.filter(project=project).order_by("pk").first()
    run = Run.objects.filter(project=project).order_by("pk").first()
    release = Release.objects.get(project=project, version="1.4.0")
    check = Check.objects.filter(project=project).order_by("pk").first()
    first_item = RunItem.objects.filter(run=run).order_by("item__position").first()
    return [
        "/",
        base,
        base + "checklists/",
        base + f"checklists/templates/{template.pk}/",
        base + "checklists/import/",
        base + "checklists/runs/",
        base + f"checklists/runs/{run.pk}/",
        base + f"checklists/runs/{run.pk}/items/{first_item.pk}/forms/",
        base + "releases/",
        base + "releases/new/",
        base + f"releases/{release.pk}/",
        base + "deployments/",
        base + f"deployments/{deployment.pk}/",
        base + "environments/staging/",
        base + "environments/production/policy/",
        base + "health/",
        base + "health/checks/",
        base + "health/checks/new/",
        base + f"health/checks/{check.pk}/",
        base + "settings/",
        "/tokens/",
    ]


def check_page(page, url: str, problems: list[str]) -> None:  # noqa: ANN001
    page.add_script_tag(path=str(AXE))
    for violation in page.evaluate(RUN_AXE, AXE_TAGS):
        nodes = "\n      ".join(violation["nodes"])
        problems.append(
            f"{url} @ {page.viewport_size['width']} px: {violation['id']} "
            f"({violation['impact']}): {violation['help']}\n      {nodes}"
        )
    scroll_width, inner_width = page.evaluate(WIDTH)
    if scroll_width > inner_width:
        problems.append(
            f"{url} @ {inner_width} px: the page is {scroll_width} px wide, wider than the "
            f"window: {', '.join(page.evaluate(TOO_WIDE))}"
        )


@pytest.mark.browser
def test_every_main_page_passes_axe_and_fits_the_window(browser, start_web, demo):
    from releasecenter.management.commands.seed_demo import DEMO_USERS

    assert AXE.exists(), "axe-core is missing: ./scripts/test runs npm ci in tools/"
    server = start_web()
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    problems: list[str] = []
    for width, height in WIDTHS:
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{server.url}/login/")
        check_page(page, "/login/", problems)
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", DEMO_USERS["admin"][0])
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/")
    for url in demo:
        for width, height in WIDTHS:
            page.set_viewport_size({"width": width, "height": height})
            response = page.goto(server.url + url)
            assert response.status == 200, url
            page.wait_for_load_state("load")
            if "/checklists/runs/" in url and "[data-run]" in page.content():
                # The N/A, note and evidence forms are part of the page once opened.
                page.wait_for_selector("[data-run][data-ready='1']", state="attached")
                page.locator(".item-actions summary").first.click()
                page.wait_for_selector(".item-actions textarea")
            check_page(page, url, problems)

    # The first Tab reaches a skip link, which takes the keyboard past the navigation.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(server.url + demo[1])
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    assert page.locator(".skip-link").is_visible()
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # A file input shows where the keyboard is, like every other control.
    page.goto(server.url + demo[1] + "checklists/import/")
    file_input = page.locator("input[type=file]").first
    file_input.focus()
    assert file_input.evaluate("e => getComputedStyle(e).outlineStyle") != "none"
    context.close()
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
