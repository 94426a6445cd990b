"""Rendering runbook text: Markdown, with any HTML in it shown as text, never run.

markdown-it runs with ``html`` off, so ``<script>`` in a runbook comes out as ``&lt;script&gt;``;
nh3 then cleans the result as a second line of defence (unsafe link schemes, attributes).
Runbook texts repeat from run to run, so rendered HTML is cached per process by text.
"""

from __future__ import annotations

from functools import lru_cache

import nh3
from django import template
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

from checklists.lib.markdown_import import format_due_offset
from releasecenter.automation import describe

register = template.Library()

_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


@lru_cache(maxsize=8192)
def _block(text: str) -> str:
    return nh3.clean(_MARKDOWN.render(text))


@lru_cache(maxsize=8192)
def _inline(text: str) -> str:
    return nh3.clean(_MARKDOWN.renderInline(text))


@register.filter
def runbook_markdown(text: str) -> SafeString:
    """Notes and details: block Markdown (tables, lists, prose)."""
    return mark_safe(_block(text or ""))  # noqa: S308 - escaped by markdown-it, cleaned by nh3


@register.filter
def runbook_inline(text: str) -> SafeString:
    """An item's text or a title: inline Markdown (code spans, emphasis, links)."""
    return mark_safe(_inline(text or ""))  # noqa: S308 - escaped by markdown-it, cleaned by nh3


@register.filter
def due_phase(minutes: int | None) -> str:
    return "" if minutes is None else format_due_offset(minutes)


@register.filter
def automation_label(automation: dict | None) -> str:
    return describe(automation)


@register.filter
def percent(pair: tuple[int, int]) -> int:
    done, total = pair
    return round(100 * done / total) if total else 0


@register.simple_tag
def severity_label(severity: str) -> str:
    return {"no-go": "NO-GO", "conditional": "CONDITIONAL", "warning": "WARNING"}.get(severity, "")


_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


@register.filter
def weekday_name(number: int | None) -> str:
    return _WEEKDAYS[number] if number is not None and 0 <= number <= 6 else ""


@register.simple_tag(takes_context=True)
def run_item(context, ri) -> SafeString:  # noqa: ANN001
    """A run's item row, built by checklists.render (see there for why not a template)."""
    from checklists.render import run_item as render_run_item

    return render_run_item(ri, context["item_ctx"])
