"""Notification channels of a project and the delivery of their messages.

Three kinds, each one small sender behind ``_SENDERS``:

* ``webhook``: JSON, signed. The receiver checks
  ``X-ReleaseCenter-Signature: sha256=<hex>`` where hex is HMAC-SHA256 with the channel's secret
  over ``<X-ReleaseCenter-Timestamp> + "." + <raw body>``. The timestamp (Unix seconds) is part of
  the signed material, so a receiver that refuses timestamps older than a few minutes cannot be
  fed a captured request again (``verify_signature`` is that check, for receivers in Python).
* ``slack``: a Slack-compatible incoming webhook (``{"text": ...}``).
* ``email``: Django's mail API with the site's mail settings (the console backend in the demo).

``send(...)`` writes one ``ChannelMessage`` per channel inside the caller's transaction and
enqueues its delivery after commit. The task's name routes it to the ``notifications`` queue
(``releasecenter.queues``: ``*.tasks.*notif*``), so slow receivers never hold up health checks
or deployments. ``deliver(id)`` claims the row with a conditional update
(a redelivered task sends nothing twice), records the try as a ``DeliveryAttempt`` and marks the
channel's health; the task retries with backoff up to ``MAX_ATTEMPTS``.

Outbound URLs go through the health checks' address guard (``monitoring.lib.ssrf.make_client``)
under the address policy of the channel's ``address_environment`` (or public addresses only).

Adding a kind: a ``Kind`` choice, a ``_send_<kind>(channel, message) -> int | None`` that raises
``DeliveryError``, an entry in ``_SENDERS`` and its validation in ``create_channel``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import httpx
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from releasecenter import events
from releasecenter.access import require_role
from releasecenter.models import Environment, Membership, Project
from releasecenter.services import Conflict

from ..lib.ssrf import SSRFBlocked, make_client
from ..notify import claim_for_delivery
from .models import ChannelMessage, DeliveryAttempt, NotificationChannel

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-ReleaseCenter-Signature"
TIMESTAMP_HEADER = "X-ReleaseCenter-Timestamp"
REPLAY_WINDOW_SECONDS = 300
MAX_ATTEMPTS = 4
WEBHOOK_TIMEOUT_SECONDS = 10.0
# A worker that died mid-delivery leaves the row "sending"; after this it may be claimed again.
CLAIM_EXPIRES = timedelta(minutes=2)


class DeliveryError(Exception):
    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


# --- Signing -----------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify_signature(
    secret: str,
    body: bytes,
    signature: str,
    timestamp: str,
    *,
    now: float | None = None,
    window: int = REPLAY_WINDOW_SECONDS,
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - sent) > window:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature or "")


# --- Channels ----------------------------------------------------------------------------------


def _check_url(url: Any, environment: Environment | None) -> str:
    from .. import services as monitoring

    if not isinstance(url, str) or not url.strip():
        raise ValidationError({"url": "A webhook needs its URL."})
    url = url.strip()
    if len(url) > 2000:
        raise ValidationError({"url": "A URL of at most 2,000 characters."})
    if environment is not None:
        monitoring.check_destination(environment, url, "url")
    else:
        decision = monitoring.make_policy((), allow_public=True).check_url(url)
        if not decision.allowed:
            raise ValidationError(
                {
                    "url": f"Refused by the address guard (rule: {decision.rule}): "
                    f"{decision.message}. Name an environment whose allow-list opens it."
                },
                code=decision.rule,
            )
    return url


@transaction.atomic
def create_channel(
    actor: Any,
    membership: Membership,
    *,
    name: str,
    kind: str,
    url: str = "",
    secret: str = "",
    emails: Iterable[str] | str = (),
    address_environment: str | None = None,
) -> tuple[NotificationChannel, str | None]:
    """Create a channel. Returns it and, for a webhook created without a secret, the secret
    generated for it: shown once, never again."""
    require_role(membership, Membership.Role.LEAD)
    project = membership.project
    name = (name or "").strip() if isinstance(name, str) else ""
    if not name or len(name) > 80 or "\x00" in name:
        raise ValidationError({"name": "A name of 1 to 80 characters."})
    if kind not in NotificationChannel.Kind.values:
        raise ValidationError({"kind": 'Kind is "webhook", "slack" or "email".'})
    environment = None
    if address_environment:
        environment = project.environments.filter(name=address_environment).first()
        if environment is None:
            raise ValidationError(
                {"address_environment": f"No environment '{address_environment}' here."}
            )
    generated = None
    email_text = ""
    if kind in (NotificationChannel.Kind.WEBHOOK, NotificationChannel.Kind.SLACK):
        if kind == NotificationChannel.Kind.WEBHOOK:
            if not secret:
                secret = generated = secrets.token_urlsafe(32)
            elif not isinstance(secret, str) or len(secret) < 16 or len(secret) > 200:
                raise ValidationError({"secret": "A secret of 16 to 200 characters."})
        else:
            secret = ""
        # Last: the guard may resolve a host name, so everything cheaper is checked first.
        url = _check_url(url, environment)
    else:
        url, secret = "", ""
        addresses = emails.replace(",", "\n").split() if isinstance(emails, str) else emails
        addresses = [str(a).strip() for a in addresses if str(a).strip()]
        if not addresses:
            raise ValidationError({"emails": "List at least one address."})
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError({"emails": f"Not an e-mail address: {address!r}."}) from None
        email_text = "\n".join(addresses)
    channel = NotificationChannel(
        project=project,
        name=name,
        kind=kind,
        url=url,
        secret=secret,
        emails=email_text,
        address_environment=environment,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    try:
        with transaction.atomic():
            channel.save()
    except IntegrityError:
        raise Conflict(f"A channel named '{name}' exists in this project.") from None
    # What the audit log keeps: never the URL (a Slack URL is its own credential) or the secret.
    events.publish(
        project.topic,
        "oncall.channel_created",
        project=project,
        actor=actor,
        obj=channel,
        after={"name": name, "kind": kind, "emails": len(email_text.split())},
        data={"text": f"Notification channel “{name}” ({channel.get_kind_display()}) added"},
    )
    return channel, generated


# --- Sending -----------------------------------------------------------------------------------


def messages_for(
    project: Project | int,
    *,
    event: str,
    subject: str,
    text: str,
    data: dict[str, Any],
    incident_id: int | None = None,
    channels: Iterable[NotificationChannel] = (),
    emails: Iterable[str] = (),
) -> list[ChannelMessage]:
    """Unsaved messages: one per channel given and one per address. ``queue`` saves them."""
    project_id = project.pk if isinstance(project, Project) else project
    payload = {"event": event, "subject": subject, "text": text, "data": data}
    common = {
        "project_id": project_id,
        "event": event,
        "subject": subject[:200],
        "text": text,
        "payload": payload,
        "incident_id": incident_id,
    }
    rows = [ChannelMessage(channel=channel, **common) for channel in channels]
    rows += [ChannelMessage(to_email=address, **common) for address in sorted(set(emails))]
    return rows


def queue(rows: list[ChannelMessage]) -> list[ChannelMessage]:
    """Save messages in one statement and deliver them after commit."""
    messages = ChannelMessage.objects.bulk_create(rows)
    ids = [m.pk for m in messages]
    if ids:
        transaction.on_commit(lambda: enqueue(ids))
    return messages


def enabled_channels(project_ids: Iterable[int]) -> dict[int, list[NotificationChannel]]:
    found: dict[int, list[NotificationChannel]] = {pk: [] for pk in project_ids}
    for channel in NotificationChannel.objects.filter(project_id__in=list(found), enabled=True):
        found[channel.project_id].append(channel)
    return found


def send(
    project: Project | int,
    *,
    channels: Iterable[NotificationChannel] | None = None,
    **message: Any,
) -> list[ChannelMessage]:
    """Queue one message per enabled channel of the project (or the channels given), and one
    per address in ``emails`` (people paged directly), inside the transaction that decides to
    send it. The payload carries no secret: only what the caller gives."""
    project_id = project.pk if isinstance(project, Project) else project
    if channels is None:
        channels = enabled_channels([project_id])[project_id]
    return queue(messages_for(project_id, channels=channels, **message))


def enqueue(ids: Iterable[int]) -> None:
    from . import tasks

    # One producer connection for the lot: a tick may queue thousands.
    with tasks.deliver_notification_message.app.producer_or_acquire() as producer:
        for pk in ids:
            tasks.deliver_notification_message.apply_async((pk,), producer=producer)


def _claim(message_id: int) -> tuple[ChannelMessage | None, uuid.UUID]:
    return claim_for_delivery(
        ChannelMessage,
        message_id,
        expires=CLAIM_EXPIRES,
        max_attempts=MAX_ATTEMPTS,
        related=("channel", "project"),
    )


def deliver(message_id: int) -> bool:
    """Try once to deliver. True when nothing is left to retry (sent, failed for good, or not
    ours to send)."""
    message, token = _claim(message_id)
    if message is None:
        return True
    channel = message.channel
    started = time.monotonic()
    status_code = None
    error = ""
    try:
        if channel is None:
            status_code = _send_personal_email(message)
        else:
            status_code = _SENDERS[channel.kind](channel, message)
    except DeliveryError as exc:
        error, status_code = str(exc), exc.status_code
    except Exception as exc:  # noqa: BLE001 - any failure of a sender is a failed try, recorded
        error = type(exc).__name__
        # The type only: an exception's text or traceback might carry a URL or a secret.
        logger.error("delivery of message %s raised %s", message.pk, error)
    now = timezone.now()
    ok = not error
    final = ok or message.attempts >= MAX_ATTEMPTS
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            message=message,
            number=message.attempts,
            attempted_at=now,
            duration_ms=(time.monotonic() - started) * 1000,
            status_code=status_code,
            ok=ok,
            error=error[:500],
        )
        ChannelMessage.objects.filter(pk=message.pk, claim_token=token).update(
            status=ChannelMessage.Status.SENT
            if ok
            else (ChannelMessage.Status.FAILED if final else ChannelMessage.Status.PENDING),
            sent_at=now if ok else None,
            last_error=error[:500],
        )
        if channel is not None:
            _mark_health(channel, ok, error, now)
    if not ok:
        logger.warning(
            "channel %s: message %s not delivered (try %s): %s",
            message.channel_id,
            message.pk,
            message.attempts,
            error,
        )
    return final


def _mark_health(channel: NotificationChannel, ok: bool, error: str, now: Any) -> None:
    health = NotificationChannel.Health.OK if ok else NotificationChannel.Health.FAILING
    changed = (
        NotificationChannel.objects.filter(pk=channel.pk)
        .exclude(health=health)
        .update(health=health, health_changed_at=now, last_error=error[:500])
    )
    if not ok and not changed:
        NotificationChannel.objects.filter(pk=channel.pk).update(last_error=error[:500])
    if changed:
        events.publish(
            channel.project.topic,
            "oncall.channel_failing" if not ok else "oncall.channel_recovered",
            project=channel.project_id,
            obj=channel,
            after={"name": channel.name, "health": health, "error": error[:200]},
            data={
                "text": f"Notification channel “{channel.name}” "
                + (f"is failing: {error[:200]}" if not ok else "delivers again")
            },
        )


def _post(channel: NotificationChannel, body: bytes, headers: dict[str, str]) -> int:
    from .. import services as monitoring

    policy = (
        monitoring.policy_for(channel.address_environment)
        if channel.address_environment_id
        else monitoring.make_policy((), allow_public=True)
    )

    async def post() -> httpx.Response:
        async with make_client(
            policy,
            timeout=WEBHOOK_TIMEOUT_SECONDS,
            headers={"User-Agent": "ReleaseCenter-Notifications/1"},
        ) as client:
            return await client.post(channel.url, content=body, headers=headers)

    try:
        response = monitoring.run_async(post)
    except SSRFBlocked as exc:
        raise DeliveryError(f"refused by the address guard ({exc.decision.rule})") from None
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        # Never the URL in the message: it may be the credential.
        raise DeliveryError(type(exc).__name__) from None
    if response.status_code >= 300:
        raise DeliveryError(f"HTTP {response.status_code}", response.status_code)
    return response.status_code


def _send_webhook(channel: NotificationChannel, message: ChannelMessage) -> int:
    body = json.dumps(
        {**message.payload, "id": message.pk, "project": message.project.slug},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    timestamp = str(int(time.time()))
    return _post(
        channel,
        body,
        {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(channel.secret, timestamp, body),
        },
    )


def _send_slack(channel: NotificationChannel, message: ChannelMessage) -> int:
    body = json.dumps({"text": f"*{message.subject}*\n{message.text}"}).encode()
    return _post(channel, body, {"Content-Type": "application/json"})


def _send_email(channel: NotificationChannel, message: ChannelMessage) -> None:
    try:
        send_mail(message.subject, message.text, None, channel.email_list())
    except Exception as exc:  # noqa: BLE001 - any mail failure is a failed try
        raise DeliveryError(f"e-mail: {type(exc).__name__}") from None
    return None


def _send_personal_email(message: ChannelMessage) -> None:
    try:
        send_mail(message.subject, message.text, None, [message.to_email])
    except Exception as exc:  # noqa: BLE001 - any mail failure is a failed try
        raise DeliveryError(f"e-mail: {type(exc).__name__}") from None
    return None


_SENDERS = {
    NotificationChannel.Kind.WEBHOOK: _send_webhook,
    NotificationChannel.Kind.SLACK: _send_slack,
    NotificationChannel.Kind.EMAIL: _send_email,
}


def failing_channels(project: Project) -> list[NotificationChannel]:
    return list(
        NotificationChannel.objects.filter(
            project=project, enabled=True, health=NotificationChannel.Health.FAILING
        )
    )
