"""Two people in real browsers on the same run: a tick appears for the other within a second,
without a reload and without touching the note they are typing."""

from __future__ import annotations

import time

import pytest

from checklists import services
from checklists.models import RunItem
from releasecenter.models import AuditEvent
from tests.conftest import login_page

RUNBOOK = """# Release day

## Checks (NO-GO)

- [ ] Database backup verified
- [ ] Feature flags reviewed
- [ ] Status page updated <script>window.hacked = true</script>

## Afterwards

- [ ] Announce in the channel
"""


@pytest.fixture
def two_people(browser, start_web, personas):  # noqa: ANN001, ANN201
    server = start_web()
    for user, password in (
        (personas.member, "member-pass-2026"),
        (personas.lead, "lead-pass-2026"),
    ):
        user.set_password(password)
        user.save()
    template = services.import_runbook(personas.member, personas.project, RUNBOOK).template
    run = services.create_run(personas.member, template, environment=personas.staging)
    pages = [
        login_page(browser, server.url, "mia-member", "member-pass-2026"),
        login_page(browser, server.url, "liam-lead", "lead-pass-2026"),
    ]
    problems: list[str] = []
    for page in pages:
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
        page.goto(f"{server.url}/p/shop/checklists/runs/{run.pk}/")
        page.wait_for_selector("[data-run][data-ready='1'][data-live-state=open]", timeout=10000)
    yield run, pages, problems
    for page in pages:
        page.context.close()


# Record when an item's state becomes "done" on a page (same clock for both browser contexts).
WATCH_STATE = """key => {
  const li = document.querySelector(`li[data-item="${key}"]`);
  new MutationObserver(() => {
    if (li.dataset.state === "done" && !window.doneAt) { window.doneAt = Date.now(); }
  }).observe(li, {attributes: true, attributeFilter: ["data-state"]});
}"""


def key_of(run, text: str) -> str:  # noqa: ANN001
    return str(RunItem.objects.get(run=run, item__text__startswith=text).pk)


@pytest.mark.browser
def test_a_tick_appears_for_the_other_person_within_a_second(two_people):
    run, (alice, bob), problems = two_people
    key = key_of(run, "Database backup verified")
    item = f'li[data-item="{key}"]'
    # Bob is typing a note on the very item Alice is about to tick.
    bob.click(f"{item} .item-actions summary")
    bob.fill(f"{item} .item-actions textarea[name=note]", "Restored it to scratch at 10:02")
    for page in (alice, bob):
        page.evaluate(WATCH_STATE, key)
    started = time.monotonic()
    alice.click(f'{item} button[data-item-action="tick"]')
    bob.wait_for_selector(f'{item}[data-state="done"]', timeout=1000)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"the tick took {elapsed:.3f}s to show"
    # From the moment Alice's page had the stored tick back to the moment Bob's page showed it.
    # From the tick's audit event (written in the tick's transaction) to Bob's page showing it;
    # both clocks are this machine's.
    event = AuditEvent.objects.get(topic=f"run:{run.pk}", verb="run.item.ticked")
    latency = bob.evaluate("window.doneAt") - event.created_at.timestamp() * 1000
    print(f"\nclick to other browser {elapsed * 1000:.0f} ms; event to shown {latency:.0f} ms")
    assert latency < 1000
    # Then the item's full state part (who, when, the untick button) follows.
    bob.wait_for_selector(f'{item} .item-state button[data-item-action="untick"]', timeout=2000)
    assert "mia-member" in bob.inner_text(f"{item} .item-state .who")
    assert (
        bob.input_value(f"{item} .item-actions textarea[name=note]")
        == "Restored it to scratch at 10:02"
    )
    assert bob.inner_text("[data-run-progress] + [data-progress-text]") == "1/4"
    # Bob's note saves on top of the tick (a tick does not touch notes): no conflict.
    bob.click(f'{item} button[data-item-action="note"]')
    bob.wait_for_selector(f"{item} .item-state .note", timeout=3000)
    row = RunItem.objects.get(pk=key)
    assert (row.state, row.note) == ("done", "Restored it to scratch at 10:02")
    alice.wait_for_selector(f"{item} .item-state .note", timeout=1000)
    assert not problems, problems
    assert bob.evaluate("window.hacked === undefined")


@pytest.mark.browser
def test_the_later_of_two_changes_to_one_item_is_told(two_people):
    run, (alice, bob), problems = two_people
    key = key_of(run, "Feature flags reviewed")
    item = f'li[data-item="{key}"]'
    # Bob's page hears nothing live (as if his network dropped for a moment), so he still
    # sees the item open after Alice ticked it.
    bob.route("**/events/stream*", lambda route: route.abort())
    bob.reload()
    bob.wait_for_selector("[data-run][data-ready='1']")
    alice.click(f'{item} button[data-item-action="tick"]')
    alice.wait_for_selector(f'{item}[data-state="done"]')
    bob.click(f"{item} .item-actions summary")
    bob.fill(f"{item} .item-actions input[name=reason]", "Not this time")
    bob.click(f'{item} button[data-item-action="na"]')
    bob.wait_for_selector(f"{item} .item-state .conflict", timeout=3000)
    message = bob.inner_text(f"{item} .item-state .conflict")
    assert "mia-member changed this item" in message and "not applied" in message
    # The answer carried the current state, so Bob now sees what Alice did.
    assert bob.get_attribute(item, "data-state") == "done"
    row = RunItem.objects.get(pk=key)
    assert (row.state, row.na_reason) == ("done", "")
    expected = ("409", "Failed to fetch", "ERR_FAILED")
    assert not [p for p in problems if not any(e in p for e in expected)], problems


@pytest.mark.browser
def test_keyboard_j_k_x(two_people):
    run, (alice, bob), problems = two_people
    alice.keyboard.press("j")
    alice.keyboard.press("j")
    alice.keyboard.press("k")
    alice.keyboard.press("j")
    alice.keyboard.press("x")
    second = f'li[data-item="{key_of(run, "Feature flags reviewed")}"]'
    alice.wait_for_selector(f'{second}[data-state="done"]', timeout=3000)
    bob.wait_for_selector(f'{second}[data-state="done"]', timeout=1000)
    alice.wait_for_selector(f'{second} .item-state button[data-item-action="untick"]')
    alice.keyboard.press("x")
    alice.wait_for_selector(f'{second}[data-state="open"]', timeout=3000)
    assert RunItem.objects.get(pk=key_of(run, "Feature flags reviewed")).state == "open"
    assert RunItem.objects.get(pk=key_of(run, "Database backup verified")).state == "open"
    assert not problems, problems


@pytest.mark.browser
def test_na_note_and_evidence_reach_the_other_page_live(two_people):
    run, (alice, bob), problems = two_people
    key = key_of(run, "Status page updated")
    item = f'li[data-item="{key}"]'
    fetched: list[str] = []
    bob.on(
        "request",
        lambda r: fetched.append(r.url) if r.url.endswith(f"/items/{key}/") else None,
    )
    alice.click(f"{item} .item-actions summary")
    alice.fill(f"{item} .item-actions input[name=reason]", "No status page for this release")
    alice.click(f'{item} button[data-item-action="na"]')
    bob.wait_for_selector(f'{item}[data-state="na"]', timeout=1000)
    bob.wait_for_selector(
        f"{item} .na-reason:has-text('No status page for this release')", timeout=1000
    )
    alice.fill(f"{item} .item-actions textarea[name=note]", "Checked with comms\nand support")
    alice.click(f'{item} button[data-item-action="note"]')
    bob.wait_for_selector(f"{item} .item-state .note:has-text('Checked with comms')", timeout=1000)
    # Ticks, N/A and notes are drawn from the event itself: no request per viewer.
    assert fetched == []
    alice.fill(f"{item} .item-actions input[name=url]", "https://status.example.com/incidents/1")
    alice.click(f'{item} button[data-item-action="link"]')
    bob.wait_for_selector(f"{item} .evidence a:has-text('status.example.com')", timeout=2000)
    assert len(fetched) == 1  # evidence changes bring the state part from the server
    # Bob's view of the item now equals a fresh load of the page.
    patched = bob.inner_text(f"{item} .item-state")
    bob.reload()
    bob.wait_for_selector("[data-run][data-ready='1']")
    assert " ".join(bob.inner_text(f"{item} .item-state").split()) == " ".join(patched.split())
    assert not problems, problems


@pytest.mark.browser
def test_the_overdue_badge_follows_the_clock_and_the_ticks(browser, start_web, personas):
    """An item falls due while the page is open: the run's "N overdue" badge appears without a
    reload, and goes when the overdue items are ticked."""
    from datetime import timedelta

    from django.utils import timezone

    server = start_web()
    personas.member.set_password("member-pass-2026")
    personas.member.save()
    runbook = "# Go live\n\n## Switch over (T-0)\n\n- [ ] Flip the flag\n- [ ] Watch errors\n"
    template = services.import_runbook(personas.member, personas.project, runbook).template
    page = login_page(browser, server.url, "mia-member", "member-pass-2026")
    run = services.create_run(
        personas.member,
        template,
        environment=personas.staging,
        planned_start=timezone.now() + timedelta(seconds=6),
    )
    page.goto(f"{server.url}/p/shop/checklists/runs/{run.pk}/")
    page.wait_for_selector("[data-run][data-ready='1']")
    badge = page.locator("[data-overdue-count]")
    assert not badge.is_visible()
    page.wait_for_selector("[data-overdue-count]:not([hidden])", timeout=10000)
    assert badge.inner_text() == "2 overdue"
    page.click(f'li[data-item="{key_of(run, "Flip the flag")}"] button[data-item-action="tick"]')
    page.wait_for_selector("[data-overdue-count]:text-is('1 overdue')")
    page.click(f'li[data-item="{key_of(run, "Watch errors")}"] button[data-item-action="tick"]')
    page.wait_for_selector("[data-overdue-count][hidden]", state="attached")
    page.reload()
    assert not page.locator("[data-overdue-count]").is_visible()
    page.context.close()


@pytest.mark.browser
def test_without_javascript_ticks_and_the_item_forms_still_work(browser, start_web, personas):
    """Tick buttons submit the page's one form, and the N/A, note and evidence forms open on a
    page of their own: both work with JavaScript off."""
    server = start_web()
    personas.member.set_password("member-pass-2026")
    personas.member.save()
    template = services.import_runbook(personas.member, personas.project, RUNBOOK).template
    run = services.create_run(personas.member, template, environment=personas.staging)
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{server.url}/login/")
    page.fill("input[name=username]", "mia-member")
    page.fill("input[name=password]", "member-pass-2026")
    page.click("button[type=submit]")
    page.goto(f"{server.url}/p/shop/checklists/runs/{run.pk}/")
    key = key_of(run, "Feature flags reviewed")
    page.click(f'li[data-item="{key}"] button[data-item-action="tick"]')
    page.wait_for_selector(f'li[data-item="{key}"][data-state="done"]')
    assert RunItem.objects.get(pk=key).state == "done"
    page.click(f'li[data-item="{key}"] .item-actions summary')
    page.click(f'li[data-item="{key}"] .item-actions a')
    page.fill("textarea[name=note]", "Flags checked by hand")
    page.click('button[data-item-action="note"]')
    page.wait_for_selector(f'li[data-item="{key}"] .item-state .note')
    assert RunItem.objects.get(pk=key).note == "Flags checked by hand"
    context.close()
