"""HTML of a run's item rows, written in Python rather than as a Django template.

Why: a run page shows every item with its state part and its action form. Through Django's
template engine that cost about 0.5 ms of CPU per item (variable lookups, ``{% if %}`` nodes,
includes), so a 100-item run spent ~50 ms rendering rows alone and missed its 100 ms p95
budget on a busy machine. The same markup built here costs ~0.04 ms per item.

The page (``run_detail.html``, through the ``{% run_item %}`` tag) and the live fragment that
replaces an item's state part (``views.run_item_state``) both come from these functions, so the
two can never drift apart. Every value that comes from people (texts, notes, names, links) goes
through ``format_html``/``escape``; only integers, enum values and URLs built from them are
interpolated directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.template.defaultfilters import filesizeformat, linebreaksbr
from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from releasecenter.automation import describe

from .models import Evidence, RunItem
from .templatetags.checklists_tags import runbook_inline, runbook_markdown

SEVERITY_LABELS = {"no-go": "NO-GO", "conditional": "CONDITIONAL", "warning": "WARNING"}
STATE_LABELS = {"done": "✔ Done", "na": "N/A", "open": "Open"}


@dataclass(frozen=True)
class ItemContext:
    can_tick: bool
    csrf_token: str
    run_url: str
    evidence_accept: str = ""


def _when(value: datetime) -> str:
    return timezone.localtime(value).strftime("%a %H:%M")


def _csrf(ctx: ItemContext) -> str:
    return format_html(
        '<input type="hidden" name="csrfmiddlewaretoken" value="{}">', ctx.csrf_token
    )


def _commands(commands: list[dict[str, str]]) -> str:
    # An inline command stands in the notes' text (its numbered step), shown there already.
    return "".join(
        format_html(
            '<figure class="command"><figcaption>{}</figcaption><pre tabindex="0"><code>{}</code></pre>'
            "</figure>",
            " · ".join(filter(None, (c.get("label"), c.get("language") or "command"))),
            c.get("code", ""),
        )
        for c in commands or ()
        if not c.get("inline")
    )


def _evidence(ev: Evidence, ctx: ItemContext) -> str:
    by = ev.uploaded_by.username if ev.uploaded_by_id else "automation"
    if ev.kind == Evidence.Kind.LINK:
        head = format_html(
            '🔗 <a href="{}" rel="noopener noreferrer nofollow" target="_blank">{}</a>',
            ev.url,
            ev.name,
        )
    else:
        head = format_html(
            '📎 <a href="{}evidence/{}/">{}</a> <span class="muted">{}</span>',
            ctx.run_url,
            ev.pk,
            ev.name,
            filesizeformat(ev.size),
        )
    remove = ""
    if ctx.can_tick:
        remove = format_html(
            '<form method="post" action="{}evidence/{}/delete/" class="inline" '
            'data-confirm="Remove the evidence {}?">{}<button type="submit" class="small danger" '
            'data-item-action="evidence-delete" aria-label="Remove {}">✕</button></form>',
            ctx.run_url,
            ev.pk,
            ev.name,
            mark_safe(_csrf(ctx)),  # noqa: S308 - built by format_html above
            ev.name,
        )
    return format_html(
        '<li>{} <span class="muted">{}, {}</span>{}</li>',
        head,
        by,
        _when(ev.uploaded_at),
        mark_safe(remove),  # noqa: S308 - built by format_html above
    )


def item_state(ri: RunItem, ctx: ItemContext, error: str = "") -> SafeString:
    """The part of an item that changes when someone ticks it: the one the page swaps."""
    state = ri.state
    out = [
        format_html(
            '<div class="item-state" id="state-{}" data-state="{}" data-version="{}" '
            'data-note="{}">',
            ri.pk,
            state,
            ri.version,
            ri.note,
        )
    ]
    if error:
        out.append(format_html('<p class="error conflict" role="alert">{}</p>', error))
    if ctx.can_tick:
        # The button submits the run page's one form (id run-actions, holding the CSRF token)
        # with the version it was shown at: no form, token and field of its own per item. Its
        # URL is relative to the run page, the only page this part is shown on.
        action = "tick" if state == RunItem.State.OPEN else "untick"
        look = "small tick" if action == "tick" else "small secondary outline untick"
        out.append(
            f'<button form="run-actions" formaction="items/{ri.pk}/{action}/" name="version" '
            f'value="{ri.version}" class="{look}" data-item-action="{action}">'
            f"{action.capitalize()}</button>"
        )
    out.append(f'<span class="state-label state-{state}">{STATE_LABELS[state]}</span>')
    if state != RunItem.State.OPEN:
        if ri.done_by_id:
            who = escape(ri.done_by.username)
        elif ri.automation_passed:
            who = "the automated check"
        else:
            who = "pre-checked"
        when = (
            f' · <time datetime="{ri.done_at.isoformat()}">{_when(ri.done_at)}</time>'
            if ri.done_at
            else ""
        )
        out.append(f'<span class="who">{who}{when}</span>')
    if state == RunItem.State.NA:
        out.append(format_html('<span class="na-reason">— {}</span>', ri.na_reason))
    if ri.due_at is not None:
        out.append(
            f'<span class="due">due <time datetime="{ri.due_at.isoformat()}">'
            f"{_when(ri.due_at)} UTC</time></span>"
            '<span class="badge no-go overdue-badge">overdue</span>'
        )
    if ri.note:
        out.append(format_html('<p class="note">📝 {}</p>', linebreaksbr(ri.note, autoescape=True)))
    automation = ri.item.automation
    if automation:
        result = ""
        if ri.automation_at:
            badge = (
                '<span class="badge go">passed</span>'
                if ri.automation_passed
                else '<span class="badge no-go">failed</span>'
            )
            result = format_html(
                ' — {} {} <time datetime="{}">{}</time>',
                mark_safe(badge),  # noqa: S308 - a constant
                ri.automation_summary,
                ri.automation_at.isoformat(),
                timezone.localtime(ri.automation_at).strftime("%H:%M"),
            )
        run_check = ""
        if ctx.can_tick and state == RunItem.State.OPEN:
            run_check = (
                f'<form method="post" action="{ri.url}automation/" class="inline">{_csrf(ctx)}'
                '<button type="submit" class="small secondary" data-item-action="automation">'
                "Run check</button></form>"
            )
        out.append(
            format_html(
                '<p class="automation">Automated: {}{}{}</p>',
                describe(automation),
                result,
                mark_safe(run_check),  # noqa: S308 - built from escaped parts
            )
        )
    evidence = getattr(ri, "evidence_list", ())
    if evidence:
        out.append('<ul class="evidence">')
        out.extend(_evidence(ev, ctx) for ev in evidence)
        out.append("</ul>")
    out.append("</div>")
    return mark_safe("".join(out))  # noqa: S308 - every part escaped above


def run_item(ri: RunItem, ctx: ItemContext) -> SafeString:
    """One item row of the run page: its text, details, state part and action form."""
    item = ri.item
    due = f' data-due="{ri.due_at.isoformat()}"' if ri.due_at is not None else ""
    out = [
        f'<li class="run-item depth-{item.depth}{" overdue" if ri.overdue else ""}" '
        f'id="item-{ri.pk}" data-item="{ri.pk}" data-state="{ri.state}" '
        f'data-version="{ri.version}"{due} tabindex="-1">'
        '<div class="item-text">'
    ]
    if item.severity in SEVERITY_LABELS:
        out.append(
            f'<span class="sev sev-{item.severity}">{SEVERITY_LABELS[item.severity]}</span> '
        )
    out.append(f'<span class="text">{runbook_inline(item.text)}</span>')
    if item.owner_role:
        out.append(format_html(' <span class="role">{}</span>', item.owner_role))
    if item.evidence_required:
        out.append(' <span class="badge">evidence required</span>')
    if item.automation:
        out.append(' <span class="badge">automated</span>')
    out.append("</div>")
    if item.details or item.commands:
        details = runbook_markdown(item.details) if item.details else ""
        out.append(
            '<details class="item-details"><summary>Details</summary>'
            + (f'<div class="notes">{details}</div>' if details else "")
            + _commands(item.commands)
            + "</details>"
        )
    out.append(item_state(ri, ctx))
    if ctx.can_tick:
        # The N/A, note and evidence forms are fetched when the person opens them (checklists.js;
        # without JavaScript the link opens them on a page of their own): carried by every item,
        # they made a long run's page several times heavier and slower to become usable.
        out.append(
            '<details class="item-actions"><summary>N/A, note, evidence</summary>'
            f'<div class="item-forms"><a href="items/{ri.pk}/forms/">Open the forms</a></div>'
            "</details>"
        )
    out.append("</li>")
    return mark_safe("".join(out))  # noqa: S308 - every part escaped above


def item_forms(ri: RunItem, ctx: ItemContext) -> SafeString:
    """The N/A, note and evidence forms of one item, fetched when its "N/A, note, evidence" part
    is opened. They carry the item's version as of now, like the state part."""
    return format_html(
        '<form method="post" action="{0}na/" enctype="multipart/form-data" '
        "data-item-form>{1}"
        '<input type="hidden" name="version" value="{2}">'
        '<div class="inline-form"><input type="text" name="reason" maxlength="500" '
        'placeholder="Why it does not apply" aria-label="Reason for N/A">'
        '<button type="submit" formaction="{0}na/" data-item-action="na" '
        'class="secondary small">Mark N/A</button></div>'
        '<textarea name="note" rows="2" maxlength="2000" aria-label="Note" '
        'data-base-version="{2}">{3}</textarea>'
        '<button type="submit" formaction="{0}note/" data-item-action="note" '
        'class="secondary small">Save note</button>'
        '<div class="inline-form"><input type="file" name="file" '
        'aria-label="Evidence file" accept="{4}">'
        '<button type="submit" formaction="{0}evidence/" data-item-action="evidence" '
        'class="secondary small">Attach file</button></div>'
        '<div class="inline-form"><input type="url" name="url" '
        'placeholder="https://ci.example.com/run/123" aria-label="Evidence link">'
        '<input type="text" name="name" maxlength="200" placeholder="Label (optional)" '
        'aria-label="Link label">'
        '<button type="submit" formaction="{0}link/" data-item-action="link" '
        'class="secondary small">Attach link</button></div>'
        "</form>",
        ri.url,
        mark_safe(_csrf(ctx)),  # noqa: S308 - built by format_html
        ri.version,
        ri.note,
        ctx.evidence_accept,
    )
