"""Checklist pages: templates (import, edit, export), runs (tick, N/A, notes, evidence).

Thin: access helpers find the object or 404, forms check shapes, services change things. The
run page is one full template that includes the item fragments; a tick answers with the item's
state fragment alone, which the page swaps in place (static/js/checklists.js).
"""

from __future__ import annotations

import logging
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from releasecenter import events
from releasecenter.access import project_for
from releasecenter.models import Membership, Project

from . import drafts, forms, selectors, services
from . import render as render_items
from .lib.markdown_export import export_runbook
from .models import (
    ChecklistTemplate,
    Evidence,
    Item,
    RecurringSchedule,
    Run,
    RunItem,
    Section,
    TemplateVersion,
)

ENGINEER = Membership.Role.ENGINEER
LEAD = Membership.Role.LEAD

logger = logging.getLogger(__name__)

# What the storages raise for a name they do not hold: the local folder, and Azure Blob.
MISSING_FILE_ERRORS = (FileNotFoundError, ResourceNotFoundError)


def _project(request, slug: str, minimum: str = Membership.Role.VIEWER):  # noqa: ANN001, ANN202
    project, membership = project_for(request.user, slug, minimum)
    request.project = project
    return project, membership


def _message(exc: Exception) -> str:
    return " ".join(getattr(exc, "messages", None) or [str(exc)])


def _form_errors(form, exc: ValidationError) -> None:  # noqa: ANN001
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _template_for(project: Project, template_id: int) -> ChecklistTemplate:
    template = (
        ChecklistTemplate.objects.filter(project=project, pk=template_id)
        .select_related("current_version")
        .first()
    )
    if template is None:
        raise Http404("No such checklist template.")
    return template


def _run_for(project: Project, run_id: int) -> Run:
    run = (
        Run.objects.filter(project=project, pk=run_id)
        .select_related("template", "template_version", "environment", "created_by", "schedule")
        .first()
    )
    if run is None:
        raise Http404("No such run.")
    return run


# --- Lists ---------------------------------------------------------------------------------


@login_required
@require_GET
def checklist_list(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = _project(request, slug)
    templates = (
        ChecklistTemplate.objects.filter(project=project, archived_at__isnull=True)
        .select_related("current_version")
        .annotate(item_count=Count("current_version__items", distinct=True))
        .order_by("name")
    )
    page = Paginator(templates, 25).get_page(request.GET.get("page"))
    runs = list(
        Run.objects.filter(project=project, status=Run.Status.OPEN)
        .select_related("environment", "template")
        .order_by("-created_at")[:10]
    )
    _attach_progress(runs)
    return render(
        request,
        "checklists/checklist_list.html",
        {
            "project": project,
            "membership": membership,
            "can_edit": membership.has_role(ENGINEER),
            "page": page,
            "open_runs": runs,
        },
    )


def _attach_progress(runs: list[Run]) -> None:
    progress = selectors.run_progress([r.pk for r in runs])
    for run in runs:
        run.progress = progress.get(run.pk, (0, 0))


RUN_FILTERS = {
    "open": {"status": Run.Status.OPEN},
    "completed": {"status": Run.Status.COMPLETED},
    "recurring": {"schedule__isnull": False},
}


@login_required
@require_GET
def run_list(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = _project(request, slug)
    show = request.GET.get("show", "all")
    runs = Run.objects.filter(project=project).select_related("environment", "template")
    if show == "missed":
        runs = runs.filter(deadline__lt=timezone.now(), status=Run.Status.OPEN)
    elif show in RUN_FILTERS:
        runs = runs.filter(**RUN_FILTERS[show])
    page = Paginator(runs.order_by("-created_at", "-id"), 25).get_page(request.GET.get("page"))
    _attach_progress(list(page.object_list))
    return render(
        request,
        "checklists/run_list.html",
        {
            "project": project,
            "membership": membership,
            "page": page,
            "show": show,
            "filters": ["all", "open", "completed", "recurring", "missed"],
        },
    )


# --- Import and new templates ----------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def checklist_import(request, slug: str):  # noqa: ANN001, ANN201
    """Upload or paste, see the section tree with its counts and the lines that made gates,
    then save: as a new template, or (when the name is taken) as the next version of it.

    The uploaded text travels with every later step, so a refused save never loses it."""
    project, membership = _project(request, slug, ENGINEER)
    form = forms.ImportForm(request.POST or None, request.FILES or None)
    preview = None
    conflict = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        step = request.POST.get("step")
        not_gates = request.POST.getlist("not_gates")
        try:
            if step in ("save", "save-version"):
                return _save_import(request, project, data, step, not_gates)
            preview, form = _import_preview(data, not_gates)
        except ValidationError as exc:
            _form_errors(form, exc)
        except services.Conflict as exc:
            # Keep the upload: show the preview again with the conflict and the two ways on.
            preview, form = _import_preview(data, not_gates)
            preview["conflict_message"] = str(exc)
            conflict = selectors.template_named(project, data.get("name") or preview["draft"].title)
            if conflict is not None:
                form.initial["name"] = ""  # the taken one is named in the conflict
    return render(
        request,
        "checklists/import.html",
        {
            "project": project,
            "membership": membership,
            "form": form,
            "preview": preview,
            "conflict": conflict,
        },
    )


def _save_import(request, project: Project, data: dict, step: str, not_gates: list[str]):  # noqa: ANN001, ANN202
    if step == "save-version":
        template = _template_for(project, _int(request.POST.get("template")) or 0)
        outcome = services.import_new_version(
            request.user,
            template,
            data["source"],
            filename=data.get("filename"),
            not_gates=not_gates,
        )
        done = f"Saved version {outcome.template.current_version.number} of"
    else:
        outcome = services.import_runbook(
            request.user,
            project,
            data["source"],
            name=data.get("name") or None,
            kind=data.get("kind") or None,
            filename=data.get("filename"),
            not_gates=not_gates,
        )
        done = "Imported"
    messages.success(
        request,
        f"{done} {outcome.template.name}: {services.counts_sentence(outcome.summary)}.",
    )
    for warning in outcome.warnings:
        messages.warning(request, warning)
    return redirect("checklist-template", slug=project.slug, template_id=outcome.template.pk)


def _import_preview(data: dict, not_gates: list[str]) -> tuple[dict[str, Any], forms.ImportForm]:
    result = services.preview_import(
        data["source"], filename=data.get("filename"), not_gates=not_gates
    )
    draft = result.draft
    text = services.decode_source(data["source"])
    preview = {
        "draft": draft,
        "counts": draft.counts(),
        "warnings": result.warnings,
        "sections": _flat_sections(draft),
        "gates": result.gates,
    }
    # The save step posts the decoded text back, so it works for uploads and pastes.
    form = forms.ImportForm(
        initial={
            "markdown": text,
            "filename": data.get("filename") or "",
            "name": data.get("name") or draft.title,
            "kind": data.get("kind") or services.guess_kind(data.get("name") or draft.title),
        }
    )
    return preview, form


def _flat_sections(draft: drafts.Draft) -> list[dict[str, Any]]:
    """The preview's tree as rows with a depth, and each section's own item count."""
    rows: list[dict[str, Any]] = []

    def visit(node: drafts.SectionNode, depth: int) -> None:
        items = list(node.walk_items())
        rows.append(
            {
                "title": node.title or "(text before the first heading)",
                "depth": depth,
                "items": len(items),
                "commands": len(node.commands) + sum(len(i.commands) for i in items),
                "gates": sum(1 for i in items if i.severity != "none"),
            }
        )
        for child in node.children:
            visit(child, depth + 1)

    for top in draft.sections:
        visit(top, 0)
    return rows


@login_required
@require_http_methods(["GET", "POST"])
def checklist_new(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = _project(request, slug, ENGINEER)
    form = forms.TemplateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            template = services.create_template(request.user, project, **form.cleaned_data)
        except ValidationError as exc:
            _form_errors(form, exc)
        except services.Conflict as exc:
            form.add_error("name", str(exc))
        else:
            messages.success(request, f"Template {template.name} created; add its sections.")
            return redirect("checklist-template", slug=project.slug, template_id=template.pk)
    return render(
        request,
        "checklists/template_new.html",
        {"project": project, "membership": membership, "form": form},
    )


# --- A template ------------------------------------------------------------------------------


def _version_tree(version: TemplateVersion) -> list[dict[str, Any]]:
    """Sections in document order, each with its items (flat, with depth). Two queries."""
    sections = list(Section.objects.filter(version=version).order_by("position"))
    items: dict[int, list[Item]] = {s.pk: [] for s in sections}
    for item in Item.objects.filter(version=version).order_by("position"):
        items[item.section_id].append(item)
    return [{"section": s, "items": items[s.pk]} for s in sections]


@login_required
@require_GET
def template_detail(request, slug: str, template_id: int, number: int | None = None):  # noqa: ANN001, ANN201
    project, membership = _project(request, slug)
    template = _template_for(project, template_id)
    version = template.current_version
    if number is not None:
        version = template.versions.filter(number=number).first()
        if version is None:
            raise Http404("No such version.")
    is_current = version.pk == template.current_version_id
    runs = list(template.runs.select_related("environment").order_by("-created_at")[:10])
    _attach_progress(runs)
    can_edit = membership.has_role(ENGINEER) and is_current and template.archived_at is None
    tree = _version_tree(version)
    items = [item for row in tree for item in row["items"]]
    counts = {
        "sections": len(tree),
        "items": len(items),
        "commands": sum(len(r["section"].commands) for r in tree)
        + sum(len(i.commands) for i in items),
        "gates": sum(1 for i in items if i.severity != "none"),
    }
    return render(
        request,
        "checklists/template_detail.html",
        {
            "project": project,
            "membership": membership,
            "template": template,
            "version": version,
            "is_current": is_current,
            "tree": tree,
            "counts": counts,
            "versions": template.versions.select_related("created_by").order_by("-number")[:20],
            "runs": runs,
            "schedules": template.schedules.select_related("environment"),
            "can_edit": can_edit,
            "can_run": membership.has_role(ENGINEER) and template.archived_at is None,
            "can_schedule": membership.has_role(LEAD) and template.archived_at is None,
            "can_archive": membership.has_role(LEAD) and template.archived_at is None,
            "run_form": forms.RunForm(project=project),
            "schedule_form": forms.ScheduleForm(project=project),
            "settings_form": forms.TemplateForm(instance=template),
        },
    )


@login_required
@require_GET
def template_export(request, slug: str, template_id: int):  # noqa: ANN001, ANN201
    project, _membership = _project(request, slug)
    template = _template_for(project, template_id)
    number = _int(request.GET.get("version"))
    version = template.versions.filter(number=number).first() if number else None
    markdown = export_runbook(drafts.to_parsed(drafts.load(version or template.current_version)))
    response = HttpResponse(markdown, content_type="text/markdown; charset=utf-8")
    filename = f"{slugify(template.name) or 'runbook'}.md"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


EDIT_FORMS = {
    "section-add": forms.SectionForm,
    "section-edit": forms.SectionForm,
    "item-add": forms.ItemForm,
    "item-edit": forms.ItemForm,
}


@login_required
@require_http_methods(["GET", "POST"])
def template_edit(request, slug: str, template_id: int, what: str):  # noqa: ANN001, ANN201
    """The editor's forms: add or edit a section or an item (a new version on save)."""
    project, membership = _project(request, slug, ENGINEER)
    template = _template_for(project, template_id)
    if what not in EDIT_FORMS:
        raise Http404("Unknown edit.")
    if template.archived_at is not None:
        raise Http404("This template was deleted.")
    version = template.current_version
    params = request.POST if request.method == "POST" else request.GET
    section = item = parent_item = None
    if what == "section-add" and params.get("parent"):
        section = _in_version(Section, version, params.get("parent"))
    elif what == "section-edit":
        section = _in_version(Section, version, params.get("id"))
    elif what == "item-add" and params.get("parent"):
        parent_item = _in_version(Item, version, params.get("parent"))
    elif what == "item-add":
        section = _in_version(Section, version, params.get("section"))
    elif what == "item-edit":
        item = _in_version(Item, version, params.get("id"))
    initial: dict[str, Any] = {}
    if what == "section-edit":
        initial = {"title": section.title, "notes": section.notes}
    elif what == "item-edit":
        initial = forms.ItemForm.initial_for(item)
    elif what == "item-add":
        # A new step takes the gate of the section (or step) it is added to.
        initial = {"severity": (parent_item or section).severity}
    form_class = EDIT_FORMS[what]
    form = form_class(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        seen = _int(request.POST.get("version"))
        try:
            _apply_edit(request.user, template, what, form, section, item, parent_item, seen)
        except ValidationError as exc:
            _form_errors(form, exc)
        except services.Conflict as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Saved as a new version.")
            return redirect("checklist-template", slug=project.slug, template_id=template.pk)
    return render(
        request,
        "checklists/template_edit.html",
        {
            "project": project,
            "membership": membership,
            "template": template,
            "version": version,
            "what": what,
            "form": form,
            "section": section,
            "item": item,
            "parent_item": parent_item,
        },
    )


def _in_version(model, version: TemplateVersion, pk: Any):  # noqa: ANN001, ANN202
    row = model.objects.filter(version=version, pk=_int(pk)).first() if _int(pk) else None
    if row is None:
        raise Http404("Not part of the current version.")
    return row


def _apply_edit(actor, template, what, form, section, item, parent_item, seen):  # noqa: ANN001, ANN202
    data = form.cleaned_data
    if what == "section-add":
        return services.add_section(
            actor,
            template,
            title=data["title"],
            notes=data["notes"],
            parent_id=section.pk if section else None,
            expected_version=seen,
        )
    if what == "section-edit":
        return services.update_section(actor, template, section.pk, expected_version=seen, **data)
    fields = form.service_fields()
    if what == "item-add":
        return services.add_item(
            actor,
            template,
            section_id=section.pk if section else parent_item.section_id,
            parent_item_id=parent_item.pk if parent_item else None,
            expected_version=seen,
            **fields,
        )
    return services.update_item(actor, template, item.pk, expected_version=seen, **fields)


OPERATIONS = {
    "section-up": lambda a, t, target, seen: services.move_section(
        a, t, target, "up", expected_version=seen
    ),
    "section-down": lambda a, t, target, seen: services.move_section(
        a, t, target, "down", expected_version=seen
    ),
    "section-delete": lambda a, t, target, seen: services.delete_section(
        a, t, target, expected_version=seen
    ),
    "item-up": lambda a, t, target, seen: services.move_item(
        a, t, target, "up", expected_version=seen
    ),
    "item-down": lambda a, t, target, seen: services.move_item(
        a, t, target, "down", expected_version=seen
    ),
    "item-delete": lambda a, t, target, seen: services.delete_item(
        a, t, target, expected_version=seen
    ),
}


@login_required
@require_POST
def template_operation(request, slug: str, template_id: int):  # noqa: ANN001, ANN201
    """One-click edits: move up or down, delete (the page asks for confirmation first),
    settings, sign-off roles and deleting the whole template."""
    project, membership = _project(request, slug, ENGINEER)
    template = _template_for(project, template_id)
    op = request.POST.get("op", "")
    seen = _int(request.POST.get("version"))
    target = _int(request.POST.get("target"))
    url = reverse("checklist-template", args=[project.slug, template.pk])
    try:
        if op in OPERATIONS:
            if target is None:
                raise ValidationError("Choose what to change.")
            OPERATIONS[op](request.user, template, target, seen)
            messages.success(request, "Saved as a new version.")
        elif op == "settings":
            form = forms.TemplateForm(request.POST, instance=ChecklistTemplate(project=project))
            if not form.is_valid():
                raise ValidationError(" ".join(e for errs in form.errors.values() for e in errs))
            services.update_template(
                request.user,
                template,
                name=form.cleaned_data["name"],
                kind=form.cleaned_data["kind"],
            )
            messages.success(request, "Template settings saved.")
        elif op == "roles":
            roles = [r for r in request.POST.get("roles", "").replace(",", "\n").split("\n")]
            services.set_signoff_roles(request.user, template, roles, expected_version=seen)
            messages.success(request, "Sign-off roles saved as a new version.")
        elif op == "archive":
            if not membership.has_role(LEAD):
                raise PermissionDenied("Deleting a template needs the lead role in the project.")
            services.archive_template(request.user, template)
            messages.success(request, f"Template {template.name} deleted; its runs are kept.")
            return redirect("checklist-list", slug=project.slug)
        else:
            raise Http404("Unknown operation.")
    except (ValidationError, services.Conflict) as exc:
        messages.error(request, _message(exc))
    return redirect(url)


# --- Starting runs and schedules ------------------------------------------------------------


@login_required
@require_POST
def run_start(request, slug: str, template_id: int):  # noqa: ANN001, ANN201
    project, _membership = _project(request, slug, ENGINEER)
    template = _template_for(project, template_id)
    form = forms.RunForm(request.POST, project=project)
    if form.is_valid():
        data = form.cleaned_data
        try:
            run = services.create_run(
                request.user,
                template,
                environment=data["environment"],
                planned_start=data["planned_start"],
                title=data["title"] or None,
            )
        except ValidationError as exc:
            messages.error(request, _message(exc))
        else:
            return redirect("checklist-run", slug=project.slug, run_id=run.pk)
    else:
        messages.error(request, "Check the run's fields: " + form.errors.as_text())
    return redirect("checklist-template", slug=project.slug, template_id=template.pk)


@login_required
@require_POST
def schedule_add(request, slug: str, template_id: int):  # noqa: ANN001, ANN201
    project, _membership = _project(request, slug, LEAD)
    template = _template_for(project, template_id)
    form = forms.ScheduleForm(request.POST, project=project)
    if form.is_valid():
        try:
            services.create_schedule(request.user, template, **form.service_fields())
        except ValidationError as exc:
            messages.error(request, "Check the schedule: " + form.error_text(exc))
        else:
            messages.success(request, "Recurring run scheduled.")
    else:
        messages.error(request, "Check the schedule: " + form.error_text())
    return redirect("checklist-template", slug=project.slug, template_id=template.pk)


@login_required
@require_POST
def schedule_action(request, slug: str, schedule_id: int, action: str):  # noqa: ANN001, ANN201
    project, _membership = _project(request, slug, LEAD)
    schedule = RecurringSchedule.objects.filter(project=project, pk=schedule_id).first()
    if schedule is None:
        raise Http404("No such schedule.")
    if action == "pause":
        services.set_schedule_active(request.user, schedule, False)
    elif action == "resume":
        services.set_schedule_active(request.user, schedule, True)
    elif action == "delete":
        services.delete_schedule(request.user, schedule)
    else:
        raise Http404("Unknown action.")
    messages.success(request, "Schedule updated.")
    return redirect("checklist-template", slug=project.slug, template_id=schedule.template_id)


# --- A run -----------------------------------------------------------------------------------


EVIDENCE_ACCEPT = ",".join(services.EVIDENCE_TYPES)


def _run_url(project: Project, run: Run) -> str:
    return reverse("checklist-run", args=[project.slug, run.pk])


def _decorate(
    run: Run, rows: list[RunItem], evidence: dict[int, list[Evidence]], run_url: str
) -> None:
    """Per-row values the item templates need. URLs are joined here rather than reversed per
    item in the template: a 100-item page would otherwise reverse 700 URLs."""
    now = timezone.now()
    for row in rows:
        row.url = f"{run_url}items/{row.pk}/"
        row.evidence_list = evidence.get(row.pk, [])
        row.due_at = selectors.due_at(run, row.item.due_offset_minutes)
        row.overdue = (
            row.state == RunItem.State.OPEN and row.due_at is not None and row.due_at < now
        )


def _evidence_by_item(queryset) -> dict[int, list[Evidence]]:  # noqa: ANN001
    grouped: dict[int, list[Evidence]] = {}
    for record in queryset.select_related("uploaded_by").order_by("uploaded_at", "id"):
        grouped.setdefault(record.run_item_id, []).append(record)
    return grouped


@login_required
@require_GET
def run_detail(request, slug: str, run_id: int):  # noqa: ANN001, ANN201
    """The run: sections with progress, items with their state, live. A fixed number of
    queries whatever the number of items (asserted in the tests)."""
    project, membership = _project(request, slug)
    run = _run_for(project, run_id)
    sections = list(Section.objects.filter(version_id=run.template_version_id).order_by("position"))
    rows = list(
        RunItem.objects.filter(run=run)
        .select_related("item", "done_by", "changed_by")
        .order_by("item__position")
    )
    run_url = _run_url(project, run)
    _decorate(run, rows, _evidence_by_item(Evidence.objects.filter(run=run)), run_url)
    by_section: dict[int, list[RunItem]] = {s.pk: [] for s in sections}
    for row in rows:
        by_section[row.item.section_id].append(row)
    section_rows = []
    for section in sections:
        items = by_section[section.pk]
        finished = sum(1 for r in items if r.state != RunItem.State.OPEN)
        section_rows.append(
            {"section": section, "items": items, "progress": (finished, len(items))}
        )
    finished = sum(1 for r in rows if r.state != RunItem.State.OPEN)
    last_event_id = events.stream_cursor(run.topic)
    return render(
        request,
        "checklists/run_detail.html",
        {
            "project": project,
            "membership": membership,
            "run": run,
            "sections": section_rows,
            "progress": (finished, len(rows)),
            "overdue_count": sum(1 for r in rows if r.overdue),
            "can_tick": membership.has_role(ENGINEER),
            "last_event_id": last_event_id,
            "item_ctx": render_items.ItemContext(
                membership.has_role(ENGINEER), get_token(request), run_url, EVIDENCE_ACCEPT
            ),
        },
    )


def _state_fragment(
    request,  # noqa: ANN001
    project: Project,
    run: Run,
    run_item: RunItem | int,
    can_tick: bool,
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    """The item's state part; ``run_item`` is the row a service just returned (with its item)
    or the pk to read it by."""
    if isinstance(run_item, RunItem):
        row = run_item
    else:
        row = (
            RunItem.objects.filter(run=run, pk=run_item)
            .select_related("item", "done_by", "changed_by")
            .first()
        )
    if row is None:
        raise Http404("No such item in this run.")
    run_url = _run_url(project, run)
    # A row a service just changed says whether it has evidence at all (has_evidence).
    evidence = (
        _evidence_by_item(Evidence.objects.filter(run_item=row))
        if getattr(row, "has_evidence", True)
        else {}
    )
    _decorate(run, [row], evidence, run_url)
    ctx = render_items.ItemContext(can_tick, get_token(request), run_url)
    return HttpResponse(render_items.item_state(row, ctx, error), status=status)


@login_required
@require_GET
def run_item_state(request, slug: str, run_id: int, item_id: int):  # noqa: ANN001, ANN201
    """The state part of one item: what the page swaps in when someone else changed it."""
    project, membership = _project(request, slug)
    run = _run_for(project, run_id)
    return _state_fragment(request, project, run, item_id, membership.has_role(ENGINEER))


@login_required
@require_GET
def run_item_forms(request, slug: str, run_id: int, item_id: int):  # noqa: ANN001, ANN201
    """The N/A, note and evidence forms of one item: the fragment the run page fetches when they
    are opened, or (without JavaScript) a page of their own."""
    project, _membership = _project(request, slug, ENGINEER)
    run = _run_for(project, run_id)
    row = RunItem.objects.filter(run=run, pk=item_id).select_related("item").first()
    if row is None:
        raise Http404("No such item in this run.")
    run_url = _run_url(project, run)
    row.url = f"{run_url}items/{row.pk}/"
    ctx = render_items.ItemContext(True, get_token(request), run_url, EVIDENCE_ACCEPT)
    forms_html = render_items.item_forms(row, ctx)
    if request.htmx:
        return HttpResponse(forms_html)
    return render(
        request,
        "checklists/item_forms.html",
        {"project": project, "run": run, "row": row, "forms_html": forms_html},
    )


def _item_action(request, run_item: RunItem, action: str) -> tuple[str, RunItem | None]:  # noqa: ANN001
    """Call the service for the action: a message for people without JavaScript, and the
    changed row when the service returns it (saves reading it again for the answer)."""
    user, post = request.user, request.POST
    version = None
    if action in VERSIONED_ACTIONS:
        version = _int(post.get("version"))
        if version is None:
            # Without the version the person saw, a stale page would overwrite someone else's
            # change without being told; the services only skip the check for the system.
            raise ValidationError(
                "This change did not say which version of the item it was made on; "
                "reload the page and make it again."
            )
    if action == "tick":
        return "Ticked.", services.tick(user, run_item, expected_version=version)
    if action == "untick":
        return "Opened again.", services.untick(user, run_item, expected_version=version)
    if action == "na":
        reason = post.get("reason", "")
        return "Marked N/A.", services.mark_na(
            user, run_item, reason=reason, expected_version=version
        )
    if action == "note":
        form = forms.NoteForm(post)
        if not form.is_valid():
            raise ValidationError("A note is at most 2000 characters.")
        note = form.cleaned_data["note"]
        return "Note saved.", services.set_note(user, run_item, note=note, expected_version=version)
    if action == "evidence":
        upload = request.FILES.get("file")
        if upload is None:
            raise ValidationError("Choose a file to attach.")
        services.add_evidence_file(user, run_item, upload)
        return "Evidence attached.", None
    if action == "link":
        services.add_evidence_link(user, run_item, post.get("url", ""), post.get("name", ""))
        return "Link attached.", None
    if action == "automation":
        from .tasks import run_automated_item

        run_item_id, user_id = run_item.pk, user.pk
        # The check talks to the environment and may take a while: a worker runs it, and the
        # result reaches the page as a live event.
        transaction.on_commit(lambda: run_automated_item.delay(run_item_id, user_id))
        return "Check started; the result appears here when it is done.", None
    raise Http404("Unknown action.")


ITEM_ACTIONS = {"tick", "untick", "na", "note", "evidence", "link", "automation"}
# Changes of the item's state or note: the request must carry the version it was made on.
VERSIONED_ACTIONS = {"tick", "untick", "na", "note"}


@login_required
@require_POST
def run_item_action(request, slug: str, run_id: int, item_id: int, action: str):  # noqa: ANN001, ANN201
    if action not in ITEM_ACTIONS:
        raise Http404("Unknown action.")
    project, _membership = _project(request, slug, ENGINEER)
    # Ticks are the hottest request of a run: one query finds the item in the run in the project.
    run_item = (
        RunItem.objects.filter(pk=item_id, run_id=run_id, run__project=project)
        .select_related("run")
        .only("pk", "run_id", "run__id", "run__project_id", "run__planned_start")
        .first()
    )
    if run_item is None:
        raise Http404("No such item in this run.")
    run = run_item.run
    error, status, done, changed = "", 200, "", None
    try:
        done, changed = _item_action(request, run_item, action)
    except services.Conflict as exc:
        error, status = str(exc), 409
    except ValidationError as exc:
        error, status = _message(exc), 400
    if request.htmx:
        return _state_fragment(request, project, run, changed or run_item.pk, True, error, status)
    if error:
        messages.error(request, error)
    else:
        messages.success(request, done)
    return redirect(reverse("checklist-run", args=[project.slug, run.pk]) + f"#item-{run_item.pk}")


@login_required
@require_GET
def evidence_download(request, slug: str, run_id: int, evidence_id: int):  # noqa: ANN001, ANN201
    """Evidence only ever leaves through here: the blob container is private, and this view
    checks the reader belongs to the project first."""
    project, _membership = _project(request, slug)
    evidence = Evidence.objects.filter(run__project=project, run_id=run_id, pk=evidence_id).first()
    if evidence is None or evidence.kind == Evidence.Kind.LINK:
        raise Http404("No such evidence.")
    if evidence.kind == Evidence.Kind.TEXT:
        response = HttpResponse(evidence.text, content_type="text/plain; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="evidence-{evidence.pk}.txt"'
        return response
    try:
        # FileResponse reads the file's size on construction, so a blob that has gone missing
        # fails here (the Azure backend opens lazily) rather than halfway through the body.
        return FileResponse(
            evidence.file.storage.open(evidence.file.name, "rb"),
            as_attachment=True,
            filename=evidence.name,
            content_type=evidence.content_type or "application/octet-stream",
        )
    except MISSING_FILE_ERRORS:
        logger.warning(
            "evidence %s of run %s: stored file %s is missing", evidence.pk, run_id, evidence.file
        )
        return render(
            request,
            "checklists/evidence_missing.html",
            {
                "project": project,
                "evidence": evidence,
                "run_url": reverse("checklist-run", args=[project.slug, run_id]),
            },
            status=404,
        )


@login_required
@require_POST
def evidence_delete(request, slug: str, run_id: int, evidence_id: int):  # noqa: ANN001, ANN201
    project, _membership = _project(request, slug, ENGINEER)
    run = _run_for(project, run_id)
    evidence = Evidence.objects.filter(run=run, pk=evidence_id).first()
    if evidence is None:
        raise Http404("No such evidence.")
    error, status = "", 200
    try:
        services.remove_evidence(request.user, evidence)
    except ValidationError as exc:
        error, status = _message(exc), 400
    if request.htmx:
        return _state_fragment(request, project, run, evidence.run_item_id, True, error, status)
    if error:
        messages.error(request, error)
    else:
        messages.success(request, "Evidence removed.")
    return redirect(
        reverse("checklist-run", args=[project.slug, run.pk]) + f"#item-{evidence.run_item_id}"
    )


@login_required
@require_GET
def run_report(request, slug: str, run_id: int):  # noqa: ANN001, ANN201
    project, _membership = _project(request, slug)
    run = _run_for(project, run_id)
    return JsonResponse(selectors.run_report(run), json_dumps_params={"indent": 2})
