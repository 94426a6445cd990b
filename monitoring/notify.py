"""Notifications to an environment's contacts: a Slack-compatible webhook and email.

A change of state calls ``queue(...)`` inside the transaction that records it: that writes one
``Notification`` row and, after commit, enqueues its delivery. ``deliver(id)`` claims the row
with a conditional update (so a redelivered task sends nothing twice), then sends what is still
missing: the webhook through the same SSRF-guarded client as the checks (under the environment's
address policy), and the email through Django's mail API.

Adding a channel: give ``Notification`` a ``<channel>_done`` flag, write ``_send_<channel>``
(raise on failure), and call it from ``deliver`` like the other two.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from releasecenter.models import Environment

from .lib.ssrf import SSRFBlocked, make_client
from .models import Check, Notification, PerformanceTarget

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 4
WEBHOOK_TIMEOUT_SECONDS = 10.0
# A worker that died mid-delivery leaves the row "sending"; after this it may be claimed again.
CLAIM_EXPIRES = timedelta(minutes=5)
RED, GREEN, AMBER = "#b3261e", "#1b6e2d", "#e0a800"


class DeliveryError(Exception):
    """A channel could not deliver; worth another attempt later."""


def queue(
    *,
    environment: Environment,
    event: str,
    subject: str,
    text: str,
    payload: dict[str, Any],
    health_check: Check | None = None,
    target: PerformanceTarget | None = None,
) -> Notification:
    """Write the notification row now and deliver it after commit (call inside the
    transaction that records the change it reports)."""
    from . import services, tasks

    settings_row = services.monitoring_for(environment)
    has_contacts = bool(settings_row.webhook_url or settings_row.emails())
    notification = Notification.objects.create(
        environment=environment,
        health_check=health_check,
        target=target,
        event=event,
        subject=subject[:200],
        text=text,
        payload=payload,
        status=Notification.Status.PENDING if has_contacts else Notification.Status.SKIPPED,
    )
    if has_contacts:
        transaction.on_commit(lambda: tasks.deliver_notification.delay(notification.pk))
    return notification


def claim_for_delivery(
    model, pk: int, *, expires: timedelta, max_attempts: int, related: tuple[str, ...]
):  # noqa: ANN001, ANN201
    """Take a pending delivery row (or one whose sender died more than ``expires`` ago) for this
    worker: one conditional UPDATE decides who sends it, so a redelivered task sends nothing twice.
    Returns the row (with ``related`` loaded) and the claim token, or None when another has it."""
    token = uuid.uuid4()
    now = timezone.now()
    claimable = Q(status=model.Status.PENDING) | Q(
        status=model.Status.SENDING, claimed_at__lt=now - expires
    )
    claimed = model.objects.filter(claimable, pk=pk, attempts__lt=max_attempts).update(
        status=model.Status.SENDING,
        claim_token=token,
        claimed_at=now,
        attempts=F("attempts") + 1,
    )
    if not claimed:
        return None, token
    return model.objects.select_related(*related).get(pk=pk), token


def _claim(notification_id: int) -> tuple[Notification | None, uuid.UUID]:
    return claim_for_delivery(
        Notification,
        notification_id,
        expires=CLAIM_EXPIRES,
        max_attempts=MAX_ATTEMPTS,
        related=("environment", "environment__monitoring", "environment__project"),
    )


def deliver(notification_id: int) -> bool:
    """Send what the notification still owes. True when nothing is left to retry."""
    from . import services

    notification, token = _claim(notification_id)
    if notification is None:
        return True
    settings_row = services.monitoring_for(notification.environment)
    mine = Notification.objects.filter(pk=notification.pk, claim_token=token)
    errors = []
    if settings_row.webhook_url and not notification.webhook_done:
        try:
            _send_webhook(notification, settings_row.webhook_url)
        except DeliveryError as exc:
            errors.append(f"webhook: {exc}")
        else:
            mine.update(webhook_done=True)
    recipients = settings_row.emails()
    if recipients and not notification.email_done:
        try:
            send_mail(notification.subject, notification.text, None, recipients)
        except Exception as exc:  # noqa: BLE001 - any mail failure is a failed channel
            errors.append(f"email: {type(exc).__name__}: {exc}")
        else:
            mine.update(email_done=True)
    if not errors:
        mine.update(status=Notification.Status.SENT, sent_at=timezone.now(), last_error="")
        return True
    final = notification.attempts >= MAX_ATTEMPTS
    mine.update(
        status=Notification.Status.FAILED if final else Notification.Status.PENDING,
        last_error="; ".join(errors)[:2000],
    )
    logger.warning(
        "notification %s not delivered (attempt %s): %s",
        notification.pk,
        notification.attempts,
        "; ".join(errors),
    )
    return final


def _send_webhook(notification: Notification, url: str) -> None:
    from . import services

    policy = services.policy_for(notification.environment)

    async def post() -> httpx.Response:
        async with make_client(policy, timeout=WEBHOOK_TIMEOUT_SECONDS) as client:
            return await client.post(url, json=notification.payload)

    try:
        response = services.run_async(post)
    except SSRFBlocked as exc:
        raise DeliveryError(f"refused by the address guard ({exc.decision.rule})") from None
    except httpx.HTTPError as exc:
        # Never the URL itself in the message: it is the webhook's credential.
        raise DeliveryError(type(exc).__name__) from None
    if response.status_code >= 300:
        raise DeliveryError(f"HTTP {response.status_code}")


# --- Messages -------------------------------------------------------------------------------


def _where(check: Check) -> str:
    service = f"/{check.service.name}" if check.service_id else ""
    return f"{check.project.slug} {check.environment.name}{service}"


def check_subject(check: Check, new: str) -> str:
    state = "FAILING" if new == Check.Status.FAILING else "recovered"
    return f"[{check.project.name}] {check.name} {state} in {check.environment.name}"


def check_text(check: Check, old: str, new: str, summary: str) -> str:
    kind = "Smoke suite" if check.is_suite else "Health check"
    return f"{kind} '{check.name}' ({_where(check)}) is now {new} (was {old}).\n\n{summary}\n"


def _slack(text: str, color: str, title: str, fields: dict[str, Any], at: datetime) -> dict:
    return {
        "text": text,
        "attachments": [
            {
                "color": color,
                "title": title,
                "fields": [
                    {"title": key, "value": str(value), "short": len(str(value)) < 40}
                    for key, value in fields.items()
                    if value not in (None, "")
                ],
                "ts": int(at.timestamp()),
            }
        ],
    }


def check_payload(check: Check, old: str, new: str, summary: str, at: datetime) -> dict:
    failing = new == Check.Status.FAILING
    icon = ":red_circle:" if failing else ":large_green_circle:"
    state = "FAILING" if failing else "recovered"
    body = _slack(
        f"{icon} {check.name} {state} in {check.environment.name}: {summary}",
        RED if failing else GREEN,
        check.name,
        {
            "Project": check.project.name,
            "Environment": check.environment.name,
            "Service": check.service.name if check.service_id else "",
            "State": f"{old} → {new}",
            "Detail": summary,
        },
        at,
    )
    body["release_center"] = {
        "event": "check.failing" if failing else "check.recovered",
        "project": check.project.slug,
        "environment": check.environment.name,
        "service": check.service.name if check.service_id else None,
        "check_id": check.pk,
        "check": check.name,
        "kind": check.kind,
        "from": old,
        "to": new,
        "summary": summary,
        "at": at.isoformat(),
    }
    return body


def _target_line(target: PerformanceTarget, value: float | None) -> str:
    shown = "no data" if value is None else f"{value:g}{target.unit}"
    return (
        f"{target.get_metric_display()} over {target.window_hours} h: {shown} "
        f"(target {target.target:g}{target.unit}, alert above {target.alert_threshold:g}{target.unit})"
    )


def target_subject(target: PerformanceTarget, new: str, value: float | None) -> str:
    env = target.environment
    state = "breached" if new == PerformanceTarget.Status.BREACHED else "back within threshold"
    return f"[{env.project.name}] {target.get_metric_display()} {state} in {env.name}"


def target_text(target: PerformanceTarget, new: str, value: float | None) -> str:
    return f"{target_subject(target, new, value)}\n\n{_target_line(target, value)}\n"


def target_payload(
    target: PerformanceTarget, old: str, new: str, value: float | None, at: datetime
) -> dict:
    env = target.environment
    breached = new == PerformanceTarget.Status.BREACHED
    body = _slack(
        f"{':warning:' if breached else ':white_check_mark:'} {target_subject(target, new, value)}",
        AMBER if breached else GREEN,
        target.get_metric_display(),
        {
            "Project": env.project.name,
            "Environment": env.name,
            "Measured": _target_line(target, value),
            "State": f"{old} → {new}",
        },
        at,
    )
    body["release_center"] = {
        "event": "target.breached" if breached else "target.recovered",
        "project": env.project.slug,
        "environment": env.name,
        "metric": target.metric,
        "value": value,
        "target": target.target,
        "alert_threshold": target.alert_threshold,
        "from": old,
        "to": new,
        "at": at.isoformat(),
    }
    return body
