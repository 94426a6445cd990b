"""Pages of the core: project list, overview, project settings, API tokens. Thin: services write."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import events, forms, overview, services, subjects
from .access import project_for, user_projects
from .models import ApiToken, AuditEvent, Membership


def _form_errors(form, exc: ValidationError) -> None:  # noqa: ANN001
    """Attach a service's ValidationError to the form, field by field where it names fields."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


def _set_nav(request, project) -> None:  # noqa: ANN001
    request.project = project


@login_required
@require_http_methods(["GET", "POST"])
def project_list(request):  # noqa: ANN001, ANN201
    form = forms.ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = services.create_project(request.user, **form.cleaned_data)
        except ValidationError as exc:
            _form_errors(form, exc)
        except services.Conflict as exc:
            form.add_error("slug", str(exc))
        else:
            messages.success(request, f"Project {project.name} created.")
            return redirect("project-overview", slug=project.slug)
    projects = user_projects(request.user).order_by("name")
    return render(request, "releasecenter/project_list.html", {"projects": projects, "form": form})


def _overview_context(project, membership):  # noqa: ANN001, ANN202
    environments = list(project.environments.all())
    panels = overview.panels(project, environments)
    return {
        "project": project,
        "membership": membership,
        "environment_panels": [(env, panels.get(env.pk, {})) for env in environments],
        "service_count": project.services.count(),
        # Each line names its subject and links to it (see subjects.py); progress ticks and
        # copies are skipped, so read a few more rows than are shown.
        "recent_events": subjects.feed(
            AuditEvent.objects.filter(project=project).select_related("actor").order_by("-id")[:40],
            10,
        ),
        "last_event_id": events.stream_cursor(project.topic),
    }


@login_required
@require_GET
def project_overview(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug)
    _set_nav(request, project)
    context = _overview_context(project, membership)
    if request.htmx:
        return render(request, "releasecenter/_overview_live.html", context)
    context["announce_form"] = forms.AnnouncementForm()
    return render(request, "releasecenter/project_overview.html", context)


@login_required
@require_POST
def post_announcement(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug)
    form = forms.AnnouncementForm(request.POST)
    if form.is_valid():
        try:
            services.post_announcement(request.user, membership, form.cleaned_data["message"])
        except (ValidationError, PermissionDenied) as exc:
            messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
        else:
            messages.success(request, "Announcement sent.")
    else:
        messages.error(request, "An announcement is 1 to 500 characters.")
    return redirect("project-overview", slug=project.slug)


@login_required
@require_http_methods(["GET", "POST"])
def project_settings(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug)
    _set_nav(request, project)
    bound = {
        "env_form": forms.EnvironmentForm(prefix="env"),
        "service_form": forms.ServiceForm(prefix="svc"),
        "member_form": forms.MemberForm(prefix="mem"),
    }
    if request.method == "POST":
        action = request.POST.get("action")
        handlers = {
            "add-environment": (
                "env_form",
                forms.EnvironmentForm,
                "env",
                services.create_environment,
            ),
            "add-service": ("service_form", forms.ServiceForm, "svc", services.create_service),
            "add-member": ("member_form", forms.MemberForm, "mem", services.add_member),
        }
        if action not in handlers:
            raise Http404("Unknown action.")
        name, form_class, prefix, service = handlers[action]
        form = form_class(request.POST, prefix=prefix)
        bound[name] = form
        if form.is_valid():
            try:
                service(request.user, membership, **form.cleaned_data)
            except ValidationError as exc:
                _form_errors(form, exc)
            except services.Conflict as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, "Saved.")
                return redirect("project-settings", slug=project.slug)
    return render(
        request,
        "releasecenter/project_settings.html",
        {
            "project": project,
            "membership": membership,
            "is_admin": membership.has_role(Membership.Role.ADMIN),
            "environments": project.environments.all(),
            "services": project.services.all(),
            "members": project.memberships.select_related("user"),
            **bound,
        },
    )


@login_required
@require_POST
def remove_member(request, slug: str, member_id: int):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug)
    target = project.memberships.filter(pk=member_id).first()
    if target is None:
        raise Http404
    try:
        services.remove_member(request.user, membership, target)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{target.user.username} removed.")
    return redirect("project-settings", slug=project.slug)


@login_required
@require_http_methods(["GET", "POST"])
def api_tokens(request):  # noqa: ANN001, ANN201
    form = forms.TokenForm(request.POST or None)
    new_token = None
    if request.method == "POST" and form.is_valid():
        try:
            token, new_token = services.create_api_token(request.user, form.cleaned_data["name"])
        except ValidationError as exc:
            _form_errors(form, exc)
        else:
            form = forms.TokenForm()
    tokens = ApiToken.objects.filter(user=request.user)
    return render(
        request,
        "releasecenter/api_tokens.html",
        {"tokens": tokens, "form": form, "new_token": new_token},
    )


@login_required
@require_POST
def revoke_api_token(request, token_id: int):  # noqa: ANN001, ANN201
    token = ApiToken.objects.filter(pk=token_id, user=request.user).first()
    if token is None:
        raise Http404
    services.revoke_api_token(request.user, token)
    messages.success(request, f"Token {token.name} revoked.")
    return redirect("token-list")
