"""How an event reads in a feed (the overview's "Recent activity", a release's timeline): one
sentence that names its subject and links to it — "Deployment #12 of 1.5.0 to production
failed verification", never "deployment: status changed".

The core cannot know other apps' objects, so each app registers a describer for the verb
prefixes it publishes (the part of the verb before the dot) in its ``AppConfig.ready()``:

    subjects.register(["deployment", "release"], describe_events)

A describer takes a list of events and answers ``{event id: Line}`` in a fixed number of
queries however many events there are; ``None`` for an event means "not worth a line in a
feed" (progress ticks, a copy of an event already listed on another topic).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.utils.html import format_html
from django.utils.safestring import SafeString

from .models import AuditEvent


@dataclass(frozen=True)
class Line:
    text: str
    url: str = ""

    def html(self) -> SafeString:
        if self.url:
            return format_html('<a href="{}">{}</a>', self.url, self.text)
        return format_html("{}", self.text)


Describer = Callable[[list[AuditEvent]], dict[int, Line | None]]
_describers: dict[str, Describer] = {}


def register(prefixes: Iterable[str], describer: Describer) -> None:
    for prefix in prefixes:
        _describers[prefix] = describer


def describe(events: list[AuditEvent]) -> dict[int, Line | None]:
    """Lines for the events whose prefix someone describes; the rest are absent."""
    groups: dict[Describer, list[AuditEvent]] = {}
    for event in events:
        describer = _describers.get(event.verb.partition(".")[0])
        if describer is not None:
            groups.setdefault(describer, []).append(event)
    lines: dict[int, Line | None] = {}
    for describer, group in groups.items():
        lines.update(describer(group))
    return lines


def feed(events: Iterable[AuditEvent], limit: int) -> list[tuple[AuditEvent, SafeString]]:
    """The first ``limit`` events worth a line, each with its sentence as safe HTML. Events no
    app describes read as the core's generic description."""
    from .templatetags.releasecenter import describe_event

    events = list(events)
    lines = describe(events)
    result = []
    for event in events:
        actor = event.actor.username if event.actor_id else ""
        if event.pk in lines:
            line = lines[event.pk]
            if line is None:
                continue
            html = line.html()
            if actor:
                html = format_html('{} <span class="muted">— {}</span>', html, actor)
        else:
            html = format_html("<strong>{}</strong> {}", actor or "system", describe_event(event))
        result.append((event, html))
        if len(result) >= limit:
            break
    return result
