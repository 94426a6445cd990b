"""A release walks from review to "go" in real browsers: the NO-GO gates are ticked on the run
page, each role signs off as a different person, and a lead watching the release page sees the
decision flip without reloading."""

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from checklists import services as checklists
from checklists.models import RunItem
from deployments import services
from deployments.models import ReleaseTarget
from releasecenter import services as core
from tests.conftest import login_page

RUNBOOK = """# Go-live

## Before the switch (NO-GO)
- [ ] Database backup verified
- [ ] Rollback plan rehearsed
"""

ROLES = [("Backend Engineer", "bea-backend"), ("Security Review", "sam-security")]
PASSWORD = "browser-test-password-2026"


@pytest.mark.browser
def test_release_walks_from_review_to_go_without_reload(browser, start_web, personas):
    admin_m = personas.membership(personas.admin)
    template = checklists.import_runbook(personas.admin, personas.project, RUNBOOK).template
    services.update_policy(
        personas.admin, admin_m, personas.production, checklist_templates=[template]
    )
    services.set_signoff_requirements(
        personas.admin, admin_m, personas.production, [(role, 1) for role, _user in ROLES]
    )
    User = get_user_model()  # noqa: N806
    for role, username in ROLES:
        User.objects.create_user(username, password=PASSWORD)
        core.add_member(
            personas.admin, admin_m, username=username, role="engineer", signoff_capacities=[role]
        )
    for user in (personas.lead, personas.member):
        user.set_password(PASSWORD)
        user.save()
    release = services.create_release(
        personas.member,
        personas.membership(personas.member),
        version="7.0.0",
        commit_sha="abc123def456",
        environments=["production"],
    )
    services.submit_for_review(personas.member, personas.membership(personas.member), release)
    target = ReleaseTarget.objects.get(release=release)
    run = target.runs.get()
    server = start_web()
    release_url = f"{server.url}/p/{personas.project.slug}/releases/{release.pk}/"

    watcher = login_page(browser, server.url, personas.lead.username, PASSWORD)
    watcher.goto(release_url)
    decision = watcher.locator("[data-environment=production] [data-decision]")
    assert decision.inner_text() == "NO-GO"
    # Assertions poll from Playwright's own world: the page's CSP forbids evaluating strings.
    expect(watcher.locator("[data-live-state=open]")).to_have_count(2, timeout=10000)
    watcher.evaluate("window.__notReloaded = true")

    ticker = login_page(browser, server.url, personas.member.username, PASSWORD)
    ticker.goto(f"{server.url}/p/{personas.project.slug}/checklists/runs/{run.pk}/")
    for row in RunItem.objects.filter(run=run).order_by("item__position"):
        ticker.click(f"#state-{row.pk} button.tick")
        ticker.wait_for_selector(f"#state-{row.pk}[data-state=done]")
    # Gates are clear; the two sign-offs are still missing, and the watcher sees that live.
    watcher.wait_for_selector(
        "[data-environment=production] .reasons:not(:has([data-code=gates]))", timeout=5000
    )

    for role, username in ROLES:
        signer = login_page(browser, server.url, username, PASSWORD)
        signer.goto(release_url)
        form = signer.locator("[data-environment=production] form.signoff-form")
        form.locator("select[name=role]").select_option(role)
        form.locator("button[value=approve]").click()
        signer.wait_for_selector(f"text=Signed off as {role}")
        signer.context.close()

    expect(decision).to_have_text("GO", timeout=5000)
    assert watcher.evaluate("window.__notReloaded") is True
    assert watcher.locator("[data-environment=production] [data-status]").inner_text() == "Approved"
    ticker.context.close()
    watcher.context.close()
