"""Recurring runs: beat opens one run per occurrence in the schedule's time zone, and a run not
completed by its deadline shows as missed on the project overview."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError

from checklists import services
from checklists.models import RecurringSchedule, Run
from releasecenter.models import AuditEvent

RUNBOOK = "# Daily checks\n\n## Morning\n\n- [ ] Dashboards green\n- [ ] Backups ran\n"


@pytest.fixture
def template(personas):  # noqa: ANN001, ANN201
    return services.import_runbook(
        personas.member, personas.project, RUNBOOK, name="Daily checks", kind="recurring"
    ).template


def schedule(personas, template, **kw) -> RecurringSchedule:  # noqa: ANN001, ANN003
    with time_machine.travel(datetime(2026, 3, 1, 0, 0, tzinfo=UTC), tick=False):
        return services.create_schedule(
            personas.lead,
            template,
            environment=kw.pop("environment", personas.production),
            **{"frequency": "daily", "time_of_day": time(9, 0), **kw},
        )


def at(year, month, day, hour, minute=0) -> datetime:  # noqa: ANN001
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_daily_run_opens_at_the_local_time_once(personas, template):
    schedule(personas, template, timezone_name="Europe/Berlin", deadline_minutes=120)
    # 08:00 UTC on 10 March is 09:00 in Berlin (CET, UTC+1).
    assert services.create_due_recurring_runs(at(2026, 3, 10, 7, 59)) != []  # the 9th's run
    assert services.create_due_recurring_runs(at(2026, 3, 10, 7, 59)) == []
    opened = services.create_due_recurring_runs(at(2026, 3, 10, 8, 0))
    assert len(opened) == 1
    run = opened[0]
    assert run.planned_start == at(2026, 3, 10, 8, 0)
    assert run.deadline == at(2026, 3, 10, 10, 0)
    assert run.environment == personas.production
    assert run.items.count() == 2
    assert "Tue 10 Mar 2026" in run.title
    # Beat running again, or a second beat, opens nothing more.
    assert services.create_due_recurring_runs(at(2026, 3, 10, 8, 1)) == []
    assert Run.objects.filter(schedule__isnull=False).count() == 2


def test_daylight_saving_time_keeps_the_local_hour(personas, template):
    schedule(personas, template, timezone_name="Europe/Berlin")
    # After 29 March 2026 Berlin is UTC+2: 09:00 local is 07:00 UTC.
    run = services.create_due_recurring_runs(at(2026, 4, 2, 7, 0))[0]
    assert run.planned_start == at(2026, 4, 2, 7, 0)


def test_weekly_and_monthly(personas, template):
    weekly = schedule(personas, template, frequency="weekly", weekday=4, time_of_day=time(15, 30))
    monthly = schedule(
        personas, template, frequency="monthly", day_of_month=15, environment=personas.staging
    )
    assert services.latest_occurrence(weekly, at(2026, 3, 12, 12)) == at(2026, 3, 6, 15, 30)
    assert services.latest_occurrence(weekly, at(2026, 3, 13, 15, 30)) == at(2026, 3, 13, 15, 30)
    assert services.latest_occurrence(monthly, at(2026, 3, 14, 23)) == at(2026, 2, 15, 9)
    assert services.latest_occurrence(monthly, at(2026, 3, 15, 9)) == at(2026, 3, 15, 9)
    # Occurrences from before the schedule existed are not back-filled.
    opened = services.create_due_recurring_runs(at(2026, 3, 14, 23))
    assert [r.schedule for r in opened] == [weekly]


def test_schedule_validation(personas, template):
    with pytest.raises(ValidationError, match="day of the week"):
        schedule(personas, template, frequency="weekly")
    with pytest.raises(ValidationError, match="1 to 28"):
        schedule(personas, template, frequency="monthly", day_of_month=31)
    with pytest.raises(ValidationError, match="Unknown time zone"):
        schedule(personas, template, timezone_name="Mars/Olympus")
    assert not RecurringSchedule.objects.exists()


def test_paused_schedules_open_nothing(personas, template):
    s = schedule(personas, template)
    services.set_schedule_active(personas.lead, s, False)
    assert services.create_due_recurring_runs(at(2026, 3, 10, 10)) == []


def test_missed_run_is_flagged_and_shown_on_the_overview(client, personas, template):
    schedule(personas, template, deadline_minutes=60)
    with time_machine.travel(at(2026, 3, 10, 9, 5), tick=False):
        run = services.create_due_recurring_runs()[0]
        client.force_login(personas.viewer)
        page = client.get("/p/shop/").content.decode()
        assert "missed" not in page
    with time_machine.travel(at(2026, 3, 10, 10, 1), tick=False):
        assert services.flag_missed_runs() == 1
        assert services.flag_missed_runs() == 0  # once
        event = AuditEvent.objects.get(verb="run.missed")
        assert event.topic == f"project:{personas.project.pk}"
        assert event.data["run"] == run.pk
        page = client.get("/p/shop/").content.decode()
    assert 'data-missed-runs="production"' in page
    assert "1 recurring checklist run missed in production" in page
    assert f"/p/shop/checklists/runs/{run.pk}/" in page
    run.refresh_from_db()
    assert run.missed_at == at(2026, 3, 10, 10, 1)


def test_completed_on_time_is_not_missed(personas, template, client):
    schedule(personas, template, deadline_minutes=60)
    with time_machine.travel(at(2026, 3, 10, 9, 5), tick=False):
        run = services.create_due_recurring_runs()[0]
        for item in run.items.all():
            services.tick(personas.member, item, expected_version=item.version)
        services.sync_completion(run.pk)
    with time_machine.travel(at(2026, 3, 10, 11), tick=False):
        assert services.flag_missed_runs() == 0
        client.force_login(personas.viewer)
        assert "data-missed-runs" not in client.get("/p/shop/").content.decode()


def test_schedule_from_the_template_page_needs_a_lead(client, personas, template):
    data = {
        "environment": personas.staging.pk,
        "frequency": "weekly",
        "time_of_day": "08:30",
        "timezone_name": "America/New_York",
        "weekday": "0",
        "deadline_hours": "4",
    }
    url = f"/p/shop/checklists/templates/{template.pk}/schedules/"
    client.force_login(personas.member)
    assert client.post(url, data).status_code == 403
    client.force_login(personas.lead)
    assert client.post(url, data).status_code == 302
    created = RecurringSchedule.objects.get()
    assert (created.weekday, created.deadline_minutes, created.timezone) == (
        0,
        240,
        "America/New_York",
    )
    page = client.get(f"/p/shop/checklists/templates/{template.pk}/").content.decode()
    assert "on Monday" in page and "America/New_York" in page
    client.post(f"/p/shop/checklists/schedules/{created.pk}/pause/")
    created.refresh_from_db()
    assert not created.active


def test_beat_schedule_names_the_tasks():
    from django.conf import settings

    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"checklists.tasks.open_recurring_runs", "checklists.tasks.flag_missed_runs"} <= tasks
    from checklists import tasks as checklist_tasks

    assert checklist_tasks.open_recurring_runs.name == "checklists.tasks.open_recurring_runs"


def test_tasks_run_the_services(personas, template):
    from checklists import tasks

    schedule(personas, template, deadline_minutes=5)
    with time_machine.travel(at(2026, 3, 10, 9, 1), tick=False):
        assert tasks.open_recurring_runs() == 1
    with time_machine.travel(at(2026, 3, 10, 9, 10), tick=False):
        assert tasks.flag_missed_runs() == 1
    assert Run.objects.get().missed_at is not None
    assert timedelta(minutes=5) == Run.objects.get().deadline - Run.objects.get().planned_start


def test_the_forms_minimum_deadline_is_accepted_and_errors_name_the_label(
    client, personas, template
):
    client.force_login(personas.lead)
    url = f"/p/{personas.project.slug}/checklists/templates/{template.pk}/schedules/"
    form = {
        "environment": personas.staging.pk,
        "frequency": "daily",
        "time_of_day": "09:00",
        "timezone_name": "UTC",
        "deadline_hours": "0.1",
    }
    client.post(url, form)
    assert RecurringSchedule.objects.get().deadline_minutes == 6

    page = client.post(url, {**form, "deadline_hours": "0.05"}, follow=True).content.decode()
    message = page.split("Check the schedule: ")[1].split("<")[0]
    assert message.startswith("Deadline (hours): ") and "deadline_hours" not in message
    assert RecurringSchedule.objects.count() == 1
