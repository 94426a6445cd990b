"""Live events: one mechanism for every app.

``publish(topic, verb, ...)`` writes an AuditEvent row and, once the transaction commits, wakes
the streams listening on that topic through Redis pub/sub. Redis carries only the wake-up: a
stream always reads the rows themselves from the database, after the last id its client saw, so
a reconnect (``Last-Event-ID``) loses nothing and repeats nothing. Without Redis, streams poll the
database instead.

Topics are ``"<kind>:<id>"`` (``project:3``, ``run:17``, ``deployment:8``). Each app registers a
resolver for its kinds in ``AppConfig.ready()`` that maps the id to the owning project's id, so
the stream can check membership before it sends anything:

    events.register_topic("run", lambda run_id: Run.objects.filter(pk=run_id)
                          .values_list("project_id", flat=True).first())
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.db import connection, models, transaction

from .models import AuditEvent, Project
from .request_context import current_request_id

logger = logging.getLogger(__name__)

_resolvers: dict[str, Callable[[str], int | None]] = {}
_listeners: dict[str, list[Callable[[AuditEvent], None]]] = {}
_redis_client: redis.Redis | None = None


def register_topic(kind: str, resolver: Callable[[str], int | None]) -> None:
    _resolvers[kind] = resolver


def listen(kind: str, listener: Callable[[AuditEvent], None]) -> None:
    """Call listener(event) after commit for every event published on a topic of this kind.

    For a higher app that must react to a lower app's events (a release re-evaluates its approval
    when an item of an attached checklist run is ticked) without the lower app knowing of it.
    """
    if listener not in _listeners.setdefault(kind, []):
        _listeners[kind].append(listener)


def project_topic_resolver(object_id: str) -> int | None:
    return int(object_id) if Project.objects.filter(pk=object_id).exists() else None


def topic_project_id(topic: str) -> int | None:
    """The id of the project a topic belongs to, or None for an unknown or malformed topic."""
    kind, _, object_id = topic.partition(":")
    resolver = _resolvers.get(kind)
    if resolver is None or not object_id.isdigit():
        return None
    return resolver(object_id)


def topic_for(obj: models.Model) -> str:
    return f"{obj._meta.model_name}:{obj.pk}"


def redis_client() -> redis.Redis | None:
    global _redis_client
    if not settings.REDIS_URL:
        return None
    if _redis_client is None:
        _redis_client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
    return _redis_client


def channel_for(topic: str) -> str:
    return f"{settings.EVENTS_CHANNEL_PREFIX}{topic}"


def publish(
    topic: str,
    verb: str,
    *,
    project: Project | int | None = None,
    actor: Any = None,
    obj: models.Model | None = None,
    before: dict | None = None,
    after: dict | None = None,
    data: dict | None = None,
) -> AuditEvent:
    """Write one event row and wake the topic's listeners after commit."""
    project_id = project.pk if isinstance(project, Project) else project
    actor_obj = actor if getattr(actor, "is_authenticated", False) else None
    event = AuditEvent.objects.create(
        topic=topic,
        verb=verb,
        project_id=project_id,
        actor=actor_obj,
        object_type=obj._meta.label_lower if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        before=before,
        after=after,
        data=data or {},
        request_id=current_request_id.get(),
    )
    if settings.REDIS_URL:
        transaction.on_commit(lambda: _wake(topic, event.pk))
    for listener in _listeners.get(topic.partition(":")[0], ()):
        transaction.on_commit(lambda listener=listener: listener(event))
    return event


def publish_many(events: list[AuditEvent]) -> list[AuditEvent]:
    """Write many event rows in one statement and wake each topic once after commit: for a
    beat task that records a thousand changes at once (SLA breaches). Rows are built by the
    caller as publish() would build them; listeners still hear every event."""
    request_id = current_request_id.get()
    for event in events:
        event.request_id = event.request_id or request_id
    created = AuditEvent.objects.bulk_create(events)
    if settings.REDIS_URL:
        last: dict[str, int] = {}
        for event in created:
            last[event.topic] = event.pk
        transaction.on_commit(lambda: [_wake(topic, pk) for topic, pk in last.items()])
    for event in created:
        for listener in _listeners.get(event.topic.partition(":")[0], ()):
            transaction.on_commit(lambda listener=listener, event=event: listener(event))
    return created


def _wake(topic: str, event_id: int) -> None:
    client = redis_client()
    if client is None:
        return
    try:
        client.publish(channel_for(topic), str(event_id))
    except redis.RedisError as exc:
        # The row is committed; listeners re-read the database on their safety interval.
        logger.warning("could not wake listeners of %s: %s", topic, exc)


def event_payload(event: AuditEvent, position: int | None = None) -> dict[str, Any]:
    return {
        "id": event.pk,
        # What a client hands back as Last-Event-ID to resume after this event.
        "position": position,
        "topic": event.topic,
        "verb": event.verb,
        "actor": event.actor.username if event.actor_id else None,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "data": event.data,
        "at": event.created_at.isoformat(),
    }


def _position() -> str:
    """The column that orders a topic's stream (see AuditEvent.stream_position)."""
    return "stream_position" if connection.vendor == "postgresql" else "id"


def stream_cursor(*topics: str) -> int:
    """The stream position a page hands its live stream: the newest event of its topics that the
    page's own reads could see. Everything after it arrives; nothing before it can appear later."""
    field = _position()
    row = (
        AuditEvent.objects.filter(topic__in=topics, **{f"{field}__isnull": False})
        .order_by(f"-{field}")
        .values_list(field, flat=True)
        .first()
    )
    return row or 0


def read_after(topic: str, position: int, limit: int = 500) -> tuple[list[dict[str, Any]], int]:
    """The committed events of a topic after a stream position, in order, and the new position."""
    field = _position()
    rows = list(
        AuditEvent.objects.filter(topic=topic, **{f"{field}__gt": position})
        .select_related("actor")
        .order_by(field)[:limit]
    )
    if rows:
        position = getattr(rows[-1], field)
    return [event_payload(e, getattr(e, field)) for e in rows], position
