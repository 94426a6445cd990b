"""On a phone at 3 a.m.: the link from a page, a login because the session has expired, one tap
on Acknowledge. Debian's chromium at 390 px wide."""

import pytest

from monitoring.incidents.models import Incident
from monitoring.oncall import escalation
from monitoring.oncall.models import EscalationPage

from .test_oncall_escalation import open_p1, setup_policy


@pytest.mark.browser
def test_acknowledge_from_a_phone_sized_page(browser, start_web, personas):
    server = start_web()
    personas.member.set_password("member-password-2026")
    personas.member.save()
    setup_policy(personas)
    incident = open_p1(personas, "Checkout returns 502 for every card payment")
    assert escalation.tick() == 1
    page_row = EscalationPage.objects.get(incident=incident)
    link = escalation.ack_link(page_row.pk, incident.pk).split("127.0.0.1:8000", 1)[1]

    context = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=3,
        is_mobile=True,
        has_touch=True,
    )
    phone = context.new_page()
    phone.goto(f"{server.url}{link}")
    # No session: the login form first, then straight back to the link.
    phone.fill("input[name=username]", "mia-member")
    phone.fill("input[name=password]", "member-password-2026")
    phone.click("button[type=submit]")
    button = phone.wait_for_selector("[data-ack]")
    box = button.bounding_box()
    assert box["height"] >= 48 and box["width"] >= 300  # a large target
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    button.tap()
    phone.wait_for_selector("text=INC-1 acknowledged")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    incident.refresh_from_db()
    assert incident.acknowledged_by == personas.member
    assert Incident.objects.get(pk=incident.pk).acknowledged_at is not None
    # The link is spent and escalation stops.
    assert EscalationPage.objects.get(pk=page_row.pk).link_used_at is not None
    assert escalation.tick() == 0
    context.close()
