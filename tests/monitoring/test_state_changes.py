"""A change of state is one event and one notification (webhook + email), even when workers
record the same failure at the same time; performance targets likewise."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import pytest
from django.core import mail
from django.db import connection

from monitoring import notify, services
from monitoring.lib.testing import TargetServer
from monitoring.models import Check, Notification, PerformanceTarget
from releasecenter.models import AuditEvent

from .support import Switchable, allow, hook_route, make_check, run, webhook_bodies


@pytest.fixture
def target() -> Iterator[TargetServer]:
    switch = Switchable(200)
    with TargetServer({"/switch": switch, "/hook": hook_route}) as server:
        server.switch = switch
        yield server


def contacts(personas, target: TargetServer) -> None:  # noqa: ANN001
    allow(
        personas.staging,
        "127.0.0.1",
        contact_emails="oncall@example.com\nlead@example.com",
        webhook_url=target.url("/hook"),
    )


def state_events(check: Check) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(
            project=check.project, verb__in=["check.failing", "check.recovered"]
        ).order_by("id")
    )


def deliver_pending() -> None:
    for pk in Notification.objects.filter(status="pending").values_list("pk", flat=True):
        assert notify.deliver(pk) is True


def test_failing_then_recovering_is_one_event_and_one_notification_each(
    personas, target, django_capture_on_commit_callbacks
):
    contacts(personas, target)
    check = make_check(personas, target.url("/switch"), name="api health")
    run(check)
    run(check)
    assert state_events(check) == []  # a first good run is not news
    assert Notification.objects.count() == 0

    target.switch.status = 503
    with django_capture_on_commit_callbacks() as callbacks:
        run(check)
        run(check)  # still failing: nothing new
    assert len(callbacks) > 0
    [event] = state_events(check)
    assert event.verb == "check.failing" and event.data["from"] == "passing"
    assert event.data["summary"] == "status 503, expected one of 200, 204"
    # Mirrored once on the check's own topic (for its live page), outside the audit timeline.
    mirror = AuditEvent.objects.get(topic=check.topic, verb="check.failing")
    assert mirror.project_id is None and mirror.data["event_id"] == event.pk

    [notification] = Notification.objects.all()
    assert notification.status == "pending"
    deliver_pending()
    [body] = webhook_bodies(target)
    assert "api health" in body["text"] and "FAILING" in body["text"]
    assert body["attachments"][0]["color"] == notify.RED
    assert body["release_center"]["event"] == "check.failing"
    assert body["release_center"]["environment"] == "staging"
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["oncall@example.com", "lead@example.com"]
    assert "api health FAILING in staging" in mail.outbox[0].subject

    # Delivering again (a redelivered task) sends nothing more.
    assert notify.deliver(notification.pk) is True
    assert len(webhook_bodies(target)) == 1 and len(mail.outbox) == 1

    target.switch.status = 200
    run(check)
    events = state_events(check)
    assert [e.verb for e in events] == ["check.failing", "check.recovered"]
    deliver_pending()
    assert [b["release_center"]["event"] for b in webhook_bodies(target)] == [
        "check.failing",
        "check.recovered",
    ]
    assert len(mail.outbox) == 2


def test_without_contacts_the_notification_is_recorded_as_skipped(personas, target):
    allow(personas.staging)
    check = make_check(personas, target.url("/503"))
    run(check)
    [notification] = Notification.objects.all()
    assert notification.status == "skipped"
    assert len(mail.outbox) == 0


def test_a_webhook_that_fails_is_retried_without_resending_the_email(personas, target):
    allow(
        personas.staging,
        "127.0.0.1",
        contact_emails="oncall@example.com",
        webhook_url=target.url("/503"),
    )
    run(make_check(personas, target.url("/503")))
    [notification] = Notification.objects.all()
    assert notify.deliver(notification.pk) is False
    notification.refresh_from_db()
    assert notification.status == "pending" and notification.email_done
    assert "HTTP 503" in notification.last_error
    assert target.url("/503") not in notification.last_error
    for _ in range(notify.MAX_ATTEMPTS - 1):
        notify.deliver(notification.pk)
    notification.refresh_from_db()
    assert notification.status == "failed" and notification.attempts == notify.MAX_ATTEMPTS
    assert len(mail.outbox) == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_recording_the_same_failure_report_it_once(personas, target):
    contacts(personas, target)
    check = make_check(personas, target.url("/switch"))
    run(check)
    target.switch.status = 503
    # One real failing answer, recorded by six "workers" at once.
    [failing] = services.run_async(
        lambda: services._execute(services._plan(services.load_checks([check.pk])))
    )
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def record() -> None:
        try:
            mine = [dataclasses.replace(failing, check=services.load_checks([check.pk])[0])]
            barrier.wait(timeout=10)
            services._record(mine, trigger="schedule")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=record) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(state_events(check)) == 1
    assert Notification.objects.count() == 1
    assert check.results.count() == 7


def test_a_breached_target_is_one_event_and_one_notification(personas, target):
    contacts(personas, target)
    target_row = PerformanceTarget.objects.create(
        environment=personas.staging,
        metric=PerformanceTarget.Metric.ERROR_RATE,
        target=0.1,
        alert_threshold=20,
    )
    check = make_check(personas, target.url("/switch"))
    for _ in range(3):
        run(check)
    target_row.refresh_from_db()
    assert target_row.status == "ok" and target_row.last_value == 0
    target.switch.status = 503
    run(check)  # 1 of 4 failed: 25 % > 20 %
    target_row.refresh_from_db()
    assert target_row.status == "breached" and target_row.last_value == 25
    run(check)
    breaches = AuditEvent.objects.filter(verb="target.breached")
    assert breaches.count() == 1
    assert Notification.objects.filter(event="target.breached").count() == 1
    deliver_pending()
    bodies = [
        b for b in webhook_bodies(target) if b["release_center"]["event"] == "target.breached"
    ]
    assert len(bodies) == 1 and bodies[0]["release_center"]["value"] == 25
    assert any("Error rate" in m.subject and "breached" in m.subject for m in mail.outbox)


def test_response_time_targets_warn_before_they_alert(personas, target):
    allow(personas.staging)
    row = PerformanceTarget.objects.create(
        environment=personas.staging,
        metric=PerformanceTarget.Metric.RESPONSE_TIME_AVG,
        target=0.001,
        alert_threshold=100000,
    )
    run(make_check(personas, target.url("/ok")))
    row.refresh_from_db()
    assert row.status == "warning" and row.last_value > 0
    assert not AuditEvent.objects.filter(verb__startswith="target.").exists()
