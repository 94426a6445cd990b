"""A person logs in with Debian's chromium and sees the project overview."""

import pytest

from tests.conftest import login_page


@pytest.mark.browser
def test_log_in_and_see_the_project_overview(browser, start_web, personas):
    server = start_web()
    personas.member.set_password("member-password-2026")
    personas.member.save()
    page = login_page(browser, server.url, "mia-member", "member-password-2026")
    assert page.url.rstrip("/") == server.url
    page.click("text=Shop")
    page.wait_for_selector("h1:has-text('Shop')")
    envs = page.locator("[data-environment]")
    assert envs.count() == 2
    assert "Nothing deployed through Release Center yet." in page.content()
    page.context.close()


@pytest.mark.browser
def test_wrong_password_shows_an_error(browser, start_web, personas):
    server = start_web()
    page = login_page(browser, server.url, "mia-member", "wrong-password")
    assert "/login/" in page.url
    assert page.locator("[role=alert]").count() == 1
    page.context.close()


@pytest.mark.browser
def test_announcement_arrives_live_without_reload(browser, start_web, personas):
    """A live event published elsewhere refreshes the overview in an open browser."""
    from django.db import transaction

    from releasecenter import events

    server = start_web()
    personas.viewer.set_password("viewer-password-2026")
    personas.viewer.save()
    page = login_page(browser, server.url, "vic-viewer", "viewer-password-2026")
    page.goto(f"{server.url}/p/{personas.project.slug}/")
    page.wait_for_selector("[data-live-state=open]", timeout=10000)
    with transaction.atomic():
        events.publish(
            personas.project.topic,
            "announcement.posted",
            project=personas.project,
            data={"message": "Release train leaves at 15:00", "by": "liam-lead"},
        )
    page.wait_for_selector("text=Release train leaves at 15:00", timeout=5000)
    page.context.close()
