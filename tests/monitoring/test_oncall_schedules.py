"""On-call schedules: rotations in local time across DST, overrides, the API and the pages."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine

from monitoring.lib import rotation as rot
from monitoring.oncall import schedules
from monitoring.oncall.models import Schedule, ScheduleOverride
from releasecenter.models import AuditEvent

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


# --- The rotation itself (no database) ---------------------------------------------------------


def weekly(members=("ana", "ben"), **kw) -> rot.Rotation:  # noqa: ANN001, ANN003
    return rot.Rotation(
        zone=BERLIN,
        kind=rot.WEEKLY,
        handoff=time(9, 0),
        anchor=date(2026, 3, 16),  # a Monday
        members=list(members),
        **kw,
    )


def test_weekly_handoff_stays_at_nine_local_across_the_spring_change():
    # Clocks in Berlin jump from 02:00 to 03:00 on Sunday 29 March 2026.
    r = weekly()
    before = r.on_call(berlin(2026, 3, 25, 12, 0))
    assert before.member == "ben"
    assert before.starts_at == berlin(2026, 3, 23, 9, 0)
    assert before.ends_at == berlin(2026, 3, 30, 9, 0)
    # 09:00 CET is 08:00 UTC; 09:00 CEST is 07:00 UTC: the same wall time, a different instant.
    assert before.starts_at.astimezone(UTC).hour == 8
    assert before.ends_at.astimezone(UTC).hour == 7
    assert before.ends_at - before.starts_at == timedelta(days=7) - timedelta(hours=1)
    assert r.on_call(berlin(2026, 3, 30, 8, 59)).member == "ben"
    assert r.on_call(berlin(2026, 3, 30, 9, 0)).member == "ana"


def test_daily_handoff_stays_at_nine_local_across_the_autumn_change():
    # Back from 03:00 to 02:00 on Sunday 25 October 2026.
    r = rot.Rotation(
        zone=BERLIN, kind=rot.DAILY, handoff=time(9), anchor=date(2026, 10, 1), members=["a", "b"]
    )
    shift = r.on_call(berlin(2026, 10, 24, 12, 0))
    assert shift.starts_at == berlin(2026, 10, 24, 9, 0)
    assert shift.ends_at == berlin(2026, 10, 25, 9, 0)
    assert shift.ends_at - shift.starts_at == timedelta(hours=25)
    assert shift.ends_at.astimezone(BERLIN).hour == 9
    # 1 Oct is shift 0 ("a"), so 24 Oct is shift 23 ("b") and 25 Oct "a".
    assert shift.member == "b"
    assert r.on_call(berlin(2026, 10, 25, 9, 0)).member == "a"


def test_an_override_replaces_the_rotation_for_its_window_only():
    cover = rot.Override(berlin(2026, 3, 24, 18, 0), berlin(2026, 3, 25, 9, 0), "cat")
    r = weekly(overrides=[cover])
    assert r.on_call(berlin(2026, 3, 24, 17, 59)).member == "ben"
    assert r.on_call(berlin(2026, 3, 24, 17, 59)).ends_at == cover.starts_at
    during = r.on_call(berlin(2026, 3, 24, 20, 0))
    assert (during.member, during.override, during.ends_at) == ("cat", True, cover.ends_at)
    after = r.on_call(berlin(2026, 3, 25, 9, 0))
    assert (after.member, after.starts_at) == ("ben", cover.ends_at)
    shifts = list(r.shifts(berlin(2026, 3, 23, 9, 0), berlin(2026, 3, 30, 9, 0)))
    assert [s.member for s in shifts] == ["ben", "cat", "ben"]


def test_time_zone_and_handoff_parsing_refuse_nonsense():
    for bad in ("Mars/Olympus", "", "../etc/passwd", "europe/berlin"):
        with pytest.raises(ValueError):
            rot.parse_time_zone(bad)
    for bad in ("9", "25:00", "09:60", "nine", "09:00:00", "-1:00"):
        with pytest.raises(ValueError):
            rot.parse_handoff(bad)
    assert rot.parse_handoff("9:30") == time(9, 30)


# --- Services, API, pages ------------------------------------------------------------------------


def make_schedule(personas, **kw):  # noqa: ANN001, ANN003, ANN201
    kw.setdefault("name", "Primary")
    kw.setdefault("time_zone", "Europe/Berlin")
    kw.setdefault("rotation", "weekly")
    kw.setdefault("handoff", "09:00")
    kw.setdefault("members", ["liam-lead", "mia-member"])
    kw.setdefault("anchor", date(2026, 3, 16))
    return schedules.create_schedule(personas.lead, personas.membership(personas.lead), **kw)


def test_schedule_api_creates_and_lists_and_answers_who_is_on_call(api_client_for, personas):
    client = api_client_for(personas.lead)
    created = client.post(
        "/api/v1/projects/shop/schedules/",
        {
            "name": "Primary",
            "time_zone": "Europe/Berlin",
            "rotation": "weekly",
            "handoff": "09:00",
            "members": ["liam-lead", "mia-member"],
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json()["members"] == ["liam-lead", "mia-member"]
    assert AuditEvent.objects.filter(verb="oncall.schedule_created").count() == 1
    listed = client.get("/api/v1/projects/shop/schedules/").json()
    assert [s["name"] for s in listed] == ["Primary"]
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=1)):
        body = client.get("/api/v1/projects/shop/oncall/").json()
    [entry] = body["schedules"]
    assert entry["name"] == "Primary" and entry["on_call"] in ("liam-lead", "mia-member")
    until = datetime.fromisoformat(entry["until"])
    assert until.astimezone(BERLIN).time() == time(9, 0)
    assert until.astimezone(BERLIN).weekday() == 0
    # Outsiders see no project at all.
    assert api_client_for(personas.outsider).get("/api/v1/projects/shop/oncall/").status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"handoff": "25:99"}, "handoff"),
        ({"handoff": "soon"}, "handoff"),
        ({"members": ["liam-lead", "oscar-outsider"]}, "members"),
        ({"members": []}, "members"),
        ({"rotation": "hourly"}, "rotation"),
    ],
)
def test_bad_schedules_are_a_400_naming_the_field_and_write_nothing(
    api_client_for, personas, change, field
):
    body = {
        "name": "Primary",
        "time_zone": "Europe/Berlin",
        "rotation": "weekly",
        "handoff": "09:00",
        "members": ["liam-lead"],
        **change,
    }
    response = api_client_for(personas.lead).post(
        "/api/v1/projects/shop/schedules/", body, format="json"
    )
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not Schedule.objects.exists()
    assert not AuditEvent.objects.filter(verb__startswith="oncall.").exists()


def test_engineers_cannot_create_schedules(api_client_for, personas):
    response = api_client_for(personas.member).post(
        "/api/v1/projects/shop/schedules/",
        {"name": "x", "time_zone": "UTC", "rotation": "daily", "handoff": "09:00", "members": []},
        format="json",
    )
    assert response.status_code == 403


def test_overlapping_overrides_are_refused(personas):
    from django.core.exceptions import ValidationError

    schedule = make_schedule(personas)
    m = personas.membership(personas.member)
    schedules.add_override(
        personas.member,
        m,
        schedule,
        username="mia-member",
        starts_at=berlin(2026, 3, 24, 18),
        ends_at=berlin(2026, 3, 25, 9),
    )
    with pytest.raises(ValidationError) as refused:
        schedules.add_override(
            personas.member,
            m,
            schedule,
            username="liam-lead",
            starts_at=berlin(2026, 3, 25, 8),
            ends_at=berlin(2026, 3, 25, 12),
        )
    assert "starts_at" in refused.value.message_dict
    assert ScheduleOverride.objects.count() == 1
    # Touching windows are fine; someone outside the project is not.
    schedules.add_override(
        personas.member,
        m,
        schedule,
        username="liam-lead",
        starts_at=berlin(2026, 3, 25, 9),
        ends_at=berlin(2026, 3, 25, 12),
    )
    with pytest.raises(ValidationError):
        schedules.add_override(
            personas.member,
            m,
            schedule,
            username="oscar-outsider",
            starts_at=berlin(2026, 4, 1, 9),
            ends_at=berlin(2026, 4, 1, 12),
        )
    assert ScheduleOverride.objects.count() == 2
    [now] = schedules.on_call([schedule], berlin(2026, 3, 24, 20))
    assert now.user == personas.member and now.override


def test_overview_and_calendar_show_who_is_on_call(client, personas):
    schedule = make_schedule(personas)
    client.force_login(personas.viewer)
    with time_machine.travel(berlin(2026, 3, 18, 12), tick=False):
        overview = client.get("/p/shop/").content.decode()
        calendar = client.get(f"/p/shop/oncall/schedules/{schedule.pk}/").content.decode()
    assert 'data-schedule="Primary"' in overview
    # Week of 16 March: the first member, until Monday 23 March 09:00 Berlin (08:00 UTC).
    assert "liam-lead" in overview and "Mon 23 Mar 08:00 UTC" in overview
    assert calendar.count('data-day="') == 28
    # Shown in the schedule's time zone; across the spring change the handoff is still 09:00.
    assert "18 Mar 00:00–23 Mar 09:00" in calendar
    assert "23 Mar 09:00–30 Mar 09:00" in calendar
    assert "30 Mar 09:00–06 Apr 09:00" in calendar
    client.force_login(personas.outsider)
    assert client.get(f"/p/shop/oncall/schedules/{schedule.pk}/").status_code == 404


def test_override_api(api_client_for, personas):
    schedule = make_schedule(personas)
    client = api_client_for(personas.member)
    url = f"/api/v1/projects/shop/schedules/{schedule.pk}/overrides/"
    body = {
        "user": "mia-member",
        "starts_at": "2026-03-24T18:00+01:00",
        "ends_at": "2026-03-25T09:00+01:00",
    }
    with time_machine.travel(berlin(2026, 3, 20, 12)):
        created = client.post(url, body, format="json")
        assert created.status_code == 201, created.json()
        overlapping = client.post(url, {**body, "user": "liam-lead"}, format="json")
        assert overlapping.status_code == 400 and "starts_at" in overlapping.json()
        assert [o["user"] for o in client.get(url).json()] == ["mia-member"]
    assert api_client_for(personas.outsider).post(url, body, format="json").status_code == 404
    assert ScheduleOverride.objects.count() == 1
