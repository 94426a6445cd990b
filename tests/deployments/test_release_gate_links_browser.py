"""The release page's gates read like the run page's items and lead to them; a reason says what
it takes. On the run page, evidence's remove button is a small button, keyboard navigation
keeps the item in view below the sticky progress bar, and a tick by keyboard keeps the focus."""

import pytest

from checklists import services as checklists
from checklists.models import RunItem
from deployments import services
from deployments.models import ReleaseTarget
from tests.conftest import login_page

RUNBOOK = """# Go-live

## Before the switch (NO-GO)
- [ ] Run `make smoke` against <b>staging</b>
- [ ] Rollback plan rehearsed

## Afterwards
""" + "".join(f"- [ ] Follow-up step {n}\n" for n in range(1, 25))
PASSWORD = "browser-test-password-2026"


@pytest.fixture
def gated_release(personas):  # noqa: ANN001, ANN201
    admin_m = personas.membership(personas.admin)
    template = checklists.import_runbook(personas.admin, personas.project, RUNBOOK).template
    services.update_policy(
        personas.admin,
        admin_m,
        personas.production,
        checklist_templates=[template],
        require_previous_verified=True,
    )
    personas.member.set_password(PASSWORD)
    personas.member.save()
    member_m = personas.membership(personas.member)
    release = services.create_release(
        personas.member, member_m, version="7.1.0", commit_sha="abc123def456"
    )
    services.submit_for_review(personas.member, member_m, release)
    run = ReleaseTarget.objects.get(release=release, environment=personas.production).runs.get()
    return release, run


@pytest.mark.browser
def test_gates_render_code_link_to_their_items_and_verified_is_explained(
    browser, start_web, personas, gated_release
):
    release, run = gated_release
    server = start_web()
    page = login_page(browser, server.url, "mia-member", PASSWORD)
    page.goto(f"{server.url}/p/shop/releases/{release.pk}/")
    column = "[data-environment=production]"
    smoke = RunItem.objects.get(run=run, item__text__startswith="Run `make smoke`")
    gate = page.locator(f'{column} [data-gate="{smoke.pk}"]')
    assert "`" not in gate.inner_text()
    assert gate.locator("code").inner_text() == "make smoke"
    assert "<b>staging</b>" in gate.inner_text()  # shown as text, not markup
    assert gate.locator("b").count() == 0
    reason = page.locator(f"{column} [data-code=previous_environment]")
    assert "deployed there successfully and its verification passed" in reason.inner_text()
    reason.locator("a").click()
    assert page.url.endswith(f"/releases/{release.pk}/#environment-staging")
    assert page.locator("#environment-staging").is_visible()
    page.locator(f'{column} [data-gate="{smoke.pk}"] a').click()
    page.wait_for_url(f"**/checklists/runs/{run.pk}/#item-{smoke.pk}")
    page.wait_for_selector("[data-run][data-ready='1']")
    page.context.close()


@pytest.mark.browser
def test_run_page_evidence_button_keyboard_scroll_and_focus(
    browser, start_web, personas, gated_release
):
    _release, run = gated_release
    rows = list(RunItem.objects.filter(run=run).order_by("item__position"))
    checklists.add_evidence_link(personas.member, rows[0], "https://ci.example.com/run/1", "CI")
    server = start_web()
    page = login_page(browser, server.url, "mia-member", PASSWORD)
    page.set_viewport_size({"width": 1280, "height": 700})
    page.goto(f"{server.url}/p/shop/checklists/runs/{run.pk}/")
    page.wait_for_selector("[data-run][data-ready='1']")

    remove = page.locator(f'#item-{rows[0].pk} [data-item-action="evidence-delete"]')
    item_width = page.locator(f"#item-{rows[0].pk}").bounding_box()["width"]
    assert remove.bounding_box()["width"] < 60 < item_width

    # Down to the last item with j, then back up with k: the item is never under the bar.
    for _ in range(len(rows)):
        page.keyboard.press("j")
    for _ in range(12):
        page.keyboard.press("k")
        focused = page.locator(".run-item:focus")
        bar = page.locator(".run-progress").bounding_box()
        top = focused.bounding_box()["y"]
        assert top >= bar["y"] + bar["height"] - 1, (top, bar)

    # Enter on the focused item's Tick button ticks it and leaves the focus in the item.
    key = page.evaluate("document.activeElement.dataset.item")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.itemAction") == "tick"
    page.keyboard.press("Enter")
    page.wait_for_selector(f'li[data-item="{key}"][data-state="done"]')
    page.wait_for_selector(f'li[data-item="{key}"] button[data-item-action="untick"]')
    # The answer to the tick (which may come after the live event that drew the change)
    # gives the focus to the item's new Untick button.
    page.wait_for_selector(f'li[data-item="{key}"] button[data-item-action="untick"]:focus')
    page.context.close()
