"""One-off freeze windows with dates in a time zone, announced before they begin; times on the
pages carry their time zone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine as tm
from django.core.exceptions import ValidationError

from deployments import services
from deployments.decision import decide
from deployments.models import TimeWindow

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def holiday_freeze(personas):
    window = services.add_time_window(
        personas.admin,
        personas.membership(personas.admin),
        personas.staging,
        kind="freeze",
        label="Holiday freeze",
        starts_at=datetime(2026, 12, 20, 0, 0, tzinfo=BERLIN),
        ends_at=datetime(2027, 1, 5, 23, 59, tzinfo=BERLIN),
        timezone="Europe/Berlin",
    )
    release = services.create_release(
        personas.member,
        personas.membership(personas.member),
        version="1.4.0",
        commit_sha="abcdef1234",
        environments=["staging"],
    )
    services.submit_for_review(personas.member, personas.membership(personas.member), release)
    return personas, release, window


def test_a_dated_freeze_blocks_while_in_force_and_its_end_clears_it(holiday_freeze):
    personas, release, window = holiday_freeze
    assert window.describe() == "Sun 2026-12-20 00:00 – Tue 2027-01-05 23:59 Europe/Berlin"
    with tm.travel(datetime(2026, 12, 19, 22, 59, tzinfo=UTC), tick=False):
        assert decide(release, personas.staging).go
    with tm.travel(datetime(2026, 12, 19, 23, 0, tzinfo=UTC), tick=False):  # 00:00 in Berlin
        reasons = decide(release, personas.staging).reasons
    assert [r.code for r in reasons] == ["freeze"]
    assert reasons[0].message == "Holiday freeze in force until Tue 2027-01-05 23:59 CET"
    with tm.travel(datetime(2027, 1, 5, 22, 58, tzinfo=UTC), tick=False):
        assert not decide(release, personas.staging).go
    with tm.travel(datetime(2027, 1, 5, 22, 59, tzinfo=UTC), tick=False):
        assert decide(release, personas.staging).go


def test_the_release_page_announces_a_freeze_before_it_begins(holiday_freeze, client):
    personas, release, _ = holiday_freeze
    url = f"/p/{personas.project.slug}/releases/{release.pk}/"

    def page() -> str:
        client.force_login(personas.member)  # sessions expire: log in at the travelled time
        return client.get(url).content.decode()

    with tm.travel(datetime(2026, 12, 16, 23, 0, tzinfo=UTC), tick=False):
        html = page()
    assert "data-upcoming-freeze" in html
    assert "Holiday freeze begins in 3 days (Sun 2026-12-20 00:00 CET)" in html
    with tm.travel(datetime(2026, 12, 1, tzinfo=UTC), tick=False):
        html = page()
    assert "data-upcoming-freeze" not in html
    with tm.travel(datetime(2026, 12, 21, tzinfo=UTC), tick=False):
        html = page()
    assert "data-upcoming-freeze" not in html and "in force until" in html


def test_the_policy_page_adds_a_dated_window_read_in_its_time_zone(personas, client):
    client.force_login(personas.admin)
    url = f"/p/{personas.project.slug}/environments/staging/policy/"
    form = {
        "action": "add-window",
        "window-kind": "freeze",
        "window-label": "Holiday freeze",
        "window-starts_at": "2026-12-20T00:00",
        "window-ends_at": "2027-01-05T23:59",
        "window-timezone": "Europe/Berlin",
    }
    client.post(url, form)
    window = TimeWindow.objects.get()
    assert window.starts_at == datetime(2026, 12, 19, 23, 0, tzinfo=UTC)
    assert window.ends_at == datetime(2027, 1, 5, 22, 59, tzinfo=UTC)
    assert window.start_weekday is None
    html = client.get(url).content.decode()
    assert "Sun 2026-12-20 00:00 – Tue 2027-01-05 23:59 Europe/Berlin" in html

    backwards = client.post(url, {**form, "window-ends_at": "2026-12-01T00:00"})
    assert "must end after it starts" in backwards.content.decode()
    both = client.post(url, {**form, "window-start_weekday": "4", "window-start_time": "16:00"})
    assert "either weekly or dated" in both.content.decode()
    assert TimeWindow.objects.count() == 1


def test_a_window_is_weekly_or_dated_and_whole(personas):
    admin, admin_m = personas.admin, personas.membership(personas.admin)
    with pytest.raises(ValidationError, match="both its start and its end"):
        services.add_time_window(
            admin,
            admin_m,
            personas.staging,
            kind="freeze",
            starts_at=datetime(2026, 12, 20, tzinfo=UTC),
        )
    with pytest.raises(ValidationError, match="weekly window's days and times"):
        services.add_time_window(admin, admin_m, personas.staging, kind="freeze")
    assert not TimeWindow.objects.exists()


def test_times_on_the_pages_carry_their_time_zone(personas, client):
    services.lock_environment(
        personas.member, personas.membership(personas.member), personas.staging, "INC-9"
    )
    client.force_login(personas.member)
    html = client.get(f"/p/{personas.project.slug}/environments/staging/").content.decode()
    banner = html.split('data-locked="yes"')[1].split("</p>")[0]
    assert " UTC</time>" in banner
