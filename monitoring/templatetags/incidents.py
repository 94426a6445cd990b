"""Rendering incident text: Markdown with any HTML shown as text, never run.

The same two layers as runbooks in the checklists app (which this app may not import):
markdown-it with ``html`` off escapes tags, nh3 drops unsafe link schemes and attributes.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

import nh3
from django import template
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

register = template.Library()

_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


def render_markdown(text: str) -> str:
    return nh3.clean(_MARKDOWN.render(text or ""))


@lru_cache(maxsize=8192)
def render_markdown_cached(text: str) -> str:
    """Timeline entries repeat from one refresh of the page to the next."""
    return render_markdown(text)


@register.filter
def incident_markdown(text: str) -> SafeString:
    return mark_safe(render_markdown(text))  # noqa: S308 - escaped by markdown-it, cleaned by nh3


@register.filter
def clock_text(seconds: int | None) -> str:
    """ "12 min left", "3 min over": the server's first rendering of a clock the script counts."""
    if seconds is None:
        return ""
    over = seconds < 0
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"
    return f"{text} over" if over else f"{text} left"


@register.filter
def iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


@register.filter
def ago(value: datetime | None) -> str:
    if value is None:
        return ""
    minutes = int((timezone.now() - value).total_seconds() // 60)
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} min ago"
    return f"{minutes // 60} h {minutes % 60} min ago"
