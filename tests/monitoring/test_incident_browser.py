"""The on-call path on a phone (390 px, chromium): a failing check suggests an incident, one
tap opens it, acknowledge, the suspect deployment is on the page, roll it back, resolve, the
postmortem is prefilled, close. Another viewer's open page gets the timeline live."""

from __future__ import annotations

import pytest

from monitoring.incidents import auto
from monitoring.incidents.models import Incident
from monitoring.lib.testing import TargetServer
from tests.conftest import login_page

from .incident_helpers import finished_deployment
from .support import Switchable, allow, make_check, run

PHONE = {"width": 390, "height": 844}


def _no_sideways_scroll(page) -> None:  # noqa: ANN001
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} scrolls sideways ({width} px)"


@pytest.mark.browser
def test_on_call_path_on_a_phone(browser, start_web, personas) -> None:  # noqa: ANN001
    admin_m = personas.membership(personas.admin)
    auto.set_policy(personas.admin, admin_m, personas.production, mode="suggest", severity="P2")
    deployment = finished_deployment(personas, personas.production, "1.5.0", minutes_ago=20)
    switch = Switchable(200)
    with TargetServer({"/switch": switch}) as target:
        allow(personas.production)
        check = make_check(
            personas, target.url("/switch"), name="checkout health", environment="production"
        )
        run(check)
        switch.status = 503
        run(check)  # turns failing: the production policy suggests an incident
    server = start_web()
    for user in (personas.member, personas.viewer):
        user.set_password("phone-password-2026")
        user.save()

    context = browser.new_context(viewport=PHONE, color_scheme="dark", has_touch=True)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{server.url}/login/")
    page.fill("input[name=username]", "mia-member")
    page.fill("input[name=password]", "phone-password-2026")
    page.click("button[type=submit]")
    page.wait_for_load_state()

    # The suggestion, one tap to open.
    page.goto(f"{server.url}/p/shop/incidents/")
    _no_sideways_scroll(page)
    suggestion = page.locator("article.suggestion")
    assert "Check “checkout health” failing in production" in suggestion.inner_text()
    suggestion.get_by_role("button", name="Open incident").click()
    page.wait_for_url("**/incidents/1/")
    incident = Incident.objects.get()
    assert incident.cause == f"check:{check.pk}"
    _no_sideways_scroll(page)

    # Another person follows the same incident page.
    other = login_page(browser, server.url, "vic-viewer", "phone-password-2026")
    other.goto(f"{server.url}/p/shop/incidents/1/")
    other.wait_for_selector("#incident-stream[data-live-state=open]", timeout=10000)

    # Acknowledge: the acknowledgement clock stops.
    page.wait_for_selector("#incident-stream[data-live-state=open]", timeout=10000)
    page.click("[data-action=acknowledge]")
    page.wait_for_selector("[data-clock=acknowledge][data-state=stopped]")
    assert Incident.objects.get().acknowledged_at is not None
    # ...which reaches the other person's open page without a reload.
    other.wait_for_selector("#timeline >> text=INC-1 acknowledged by mia-member", timeout=30000)
    other.wait_for_selector("[data-clock=acknowledge][data-state=stopped]", timeout=30000)

    # The suspect deployment, and the rollback through the deployments service.
    suspect = page.locator(f"[data-suspect='deployment:{deployment.pk}']")
    assert f"Deployment #{deployment.pk} of 1.5.0 to production" in suspect.inner_text()
    assert "api 1.4.9 → 1.5.0" in suspect.inner_text()
    box = suspect.locator("[data-action=rollback]").bounding_box()
    assert box["height"] >= 40  # a target a thumb can hit
    suspect.locator("[data-action=rollback]").click()
    page.wait_for_selector("text=Rollback requested")
    deployment.refresh_from_db()
    assert deployment.status == "rolling_back"
    assert "Rollback of Deployment" in page.locator("#timeline").inner_text()
    # ...and it reaches the other person's open page without a reload.
    other.wait_for_selector("#timeline >> text=Rollback of Deployment", timeout=30000)

    # Post an update from the on-call view.
    page.goto(f"{server.url}/p/shop/incidents/oncall/")
    _no_sideways_scroll(page)
    page.fill(".oncall-update textarea", "Rolled back 1.5.0; watching checkout")
    page.click("[data-action=update]")
    page.wait_for_load_state()
    other.wait_for_selector("#timeline >> text=watching checkout", timeout=30000)

    # Resolve: the postmortem comes prefilled from the record.
    page.goto(f"{server.url}/p/shop/incidents/1/")
    page.select_option(".status-form select[name=status]", "resolved")
    page.fill(".status-form input[name=message]", "Checkout healthy after the rollback")
    page.click(".status-form button[type=submit]")
    page.wait_for_url("**/incidents/1/postmortem/")
    _no_sideways_scroll(page)
    record = page.locator("section.record").inner_text()
    assert f"Deployment #{deployment.pk} of 1.5.0 to production" in record
    assert "Check “checkout health” in production started failing" in record
    assert "checkout health" in page.locator("textarea[name=summary]").input_value()

    # Close.
    page.fill(".status-form input[name=message]", "Postmortem written")
    page.click("[data-action=close]")
    page.wait_for_load_state()
    assert Incident.objects.get().status == "closed"
    context.close()
    other.context.close()
