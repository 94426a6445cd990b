"""HTML of a release column's gate lists, written in Python rather than as a Django template.

Why: a release page lists every severity-graded item of every environment's checklists (a
release of 4 environments with 300 items has some 225 gates), and through the template engine
each gate cost variable lookups, ``{% if %}`` nodes and filters: about a third of the page's
server time, on a page whose p95 budget is 100 ms. The same markup built here costs a small
fraction of that.

Every value goes through ``_e`` (``html.escape`` with quotes, exactly what Django's ``escape``
does, without building a SafeString per value), and gate texts through ``runbook_inline`` (the
run page's inline Markdown: escaped by markdown-it, cleaned by nh3); the markup is marked safe
once, whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape

from django.utils import timezone
from django.utils.html import conditional_escape
from django.utils.safestring import SafeString, mark_safe

from checklists.templatetags.checklists_tags import runbook_inline

from .decision import Gate


@dataclass(frozen=True)
class GateContext:
    is_lead: bool
    csrf_token: str
    accept_risk_url: str
    acknowledge_url: str
    default_expiry: str
    runs_url: str = ""  # the project's checklist runs, "/p/<slug>/checklists/runs/"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _minute(value: datetime) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M %Z")


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{name}" value="{_e(value)}">'


def _gate_text(gate: Gate, ctx: GateContext) -> str:
    """The item's text as the run page shows it (code spans, emphasis; escaped and cleaned by
    runbook_inline), linked to the item in its run."""
    text = runbook_inline(gate.text)
    if not gate.run_id or not ctx.runs_url:
        return text
    url = _e(f"{ctx.runs_url}{gate.run_id}/#item-{gate.key}")
    if "<a " in text:  # a link inside the text: no link around it
        return f'{text} <a href="{url}">(item)</a>'
    return f'<a href="{url}">{text}</a>'


def _open_gate(gate: Gate, environment: str, production: bool, ctx: GateContext) -> str:
    action = ""
    fields = ""
    if (gate.severity == "conditional" and production and not gate.accepted_until) or (
        gate.severity == "warning" and not gate.acknowledged
    ):
        fields = (
            _hidden("csrfmiddlewaretoken", ctx.csrf_token)
            + _hidden("environment", environment)
            + _hidden("item_key", gate.key)
        )
    if gate.severity == "conditional" and production:
        if gate.accepted_until:
            action = (
                f'<small class="accepted">risk accepted until {_minute(gate.accepted_until)}'
                "</small>"
            )
        elif ctx.is_lead:
            action = (
                '<details class="inline-details"><summary>Accept risk</summary>'
                f'<form method="post" action="{_e(ctx.accept_risk_url)}">{fields}'
                '<label>Reason <input name="reason" minlength="10" required></label>'
                f"<label>Expires ({_e(timezone.get_current_timezone_name())} time) "
                '<input type="datetime-local" name="expires_at" '
                f'value="{_e(ctx.default_expiry)}" required></label>'
                '<button type="submit" class="small">Accept risk</button></form></details>'
            )
    elif gate.severity == "warning":
        if gate.acknowledged:
            action = '<small class="accepted">acknowledged</small>'
        else:
            action = (
                f'<form method="post" action="{_e(ctx.acknowledge_url)}" class="inline">{fields}'
                '<button type="submit" class="secondary outline small">Acknowledge</button>'
                "</form>"
            )
    severity = _e(gate.severity)
    failure = ""
    if gate.automation_failure:
        failure = (
            '<small class="automation-failed" data-automation-failed>automated check failed: '
            f"{_e(gate.automation_failure)}</small> "
        )
    return (
        f'<li class="gate {severity} open" data-gate="{_e(gate.key)}">'
        f'<span class="badge sev-{severity}">{_e(gate.severity.upper())}</span> ⬜ '
        f"{_gate_text(gate, ctx)} {failure}{action}</li>"
    )


def _closed_gate(gate: Gate, ctx: GateContext) -> str:
    mark = "✅" if gate.state == "done" else "➖"
    return (
        f'<li class="gate {_e(gate.severity)} {_e(gate.state)}" data-gate="{_e(gate.key)}">'
        f"{mark} {_gate_text(gate, ctx)}</li>"
    )


def gates(
    environment: str,
    production: bool,
    open_gates: list[Gate],
    closed_gates: list[Gate],
    ctx: GateContext,
) -> SafeString:
    """The "Gates" part of one environment's column: open gates with their actions (accept
    risk, acknowledge), then the ticked or N/A ones folded away."""
    parts = [f'<h3 id="gates-{_e(environment)}">Gates</h3>']
    if not open_gates and not closed_gates:
        parts.append('<p class="empty">No severity gates in this environment\'s checklists.</p>')
        return mark_safe("".join(parts))  # noqa: S308 - every value is escaped by _e
    parts.append('<ul class="gates">')
    parts.extend(_open_gate(g, environment, production, ctx) for g in open_gates)
    parts.append("</ul>")
    if closed_gates:
        count = len(closed_gates)
        parts.append(
            f'<details class="closed-gates"><summary>{count} gate{"" if count == 1 else "s"} '
            'ticked or N/A</summary><ul class="gates">'
        )
        parts.extend(_closed_gate(g, ctx) for g in closed_gates)
        parts.append("</ul></details>")
    return mark_safe("".join(parts))  # noqa: S308 - every value is escaped by _e


def timeline(entries: list[dict]) -> SafeString:
    """The release timeline's list; ``entries`` come from release_views._timeline, whose
    ``text`` is already safe HTML (format_html / describe_event)."""
    items = "".join(
        f'<li><time datetime="{_e(e["iso"])}">{_e(e["when"])}</time> '
        f'<strong>{_e(e["actor"])}</strong> <span data-verb="{_e(e["verb"])}">'
        f"{conditional_escape(e['text'])}</span></li>"
        for e in entries
    )
    return mark_safe(f'<ul class="timeline">{items}</ul>')  # noqa: S308 - values escaped
