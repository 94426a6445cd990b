"""Pages of deployment jobs: the deployments list, a deployment (live), an environment (what runs
where, its lock and its deploy target), and the Deploy button's target. Thin: services act."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.db.models import Max
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from releasecenter import events
from releasecenter.access import project_for
from releasecenter.models import Membership
from releasecenter.services import Conflict

from .decision import decide
from .models import (
    DeployedVersion,
    Deployment,
    DeploymentStep,
    DeployTarget,
    EnvironmentLock,
    Release,
    ReleaseTarget,
)
from .services import jobs as job_services
from .services.releases import (
    DeployRefused,
    lock_environment,
    may_unlock,
    unlock_environment,
)

PAGE_SIZE = 25
LOG_LINES_SHOWN = 1000
STEP_KINDS = DeploymentStep.ORDER
NOT_RUN = (
    DeploymentStep.Status.PENDING,
    DeploymentStep.Status.SKIPPED,
    DeploymentStep.Status.CANCELLED,
)


# --- Forms ---------------------------------------------------------------------------------------


class DeploymentFilterForm(forms.Form):
    environment = forms.CharField(required=False)
    status = forms.ChoiceField(
        required=False,
        choices=[("", "Any status"), *Deployment.Status.choices],
        widget=forms.Select(attrs={"aria-label": "Status"}),
    )
    kind = forms.ChoiceField(
        required=False,
        choices=[("", "Any kind"), *Deployment.Kind.choices],
        widget=forms.Select(attrs={"aria-label": "Kind"}),
    )
    version = forms.CharField(required=False, max_length=64)


class LockForm(forms.Form):
    reason = forms.CharField(max_length=2000, widget=forms.TextInput)


class StartForm(forms.Form):
    override_reason = forms.CharField(required=False, max_length=2000, widget=forms.Textarea)


class RollbackForm(forms.Form):
    reason = forms.CharField(required=False, max_length=2000)


class SecretInput(forms.PasswordInput):
    """Never renders the stored value back: the page says "set" or "not set" beside it."""

    def __init__(self) -> None:
        super().__init__(render_value=False, attrs={"autocomplete": "new-password"})


class DeployTargetForm(forms.ModelForm):
    api_url = forms.URLField(
        required=False, assume_scheme="https", help_text="e.g. https://k8s.example:6443"
    )
    webhook_url = forms.URLField(required=False, assume_scheme="https")
    bearer_token = forms.CharField(required=False, widget=SecretInput())
    webhook_secret = forms.CharField(required=False, widget=SecretInput())
    kubeconfig = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off"}),
        help_text="Pasted once; never shown again. Inline tokens or certificates only.",
    )
    deployment_names = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One 'service = Deployment name' per line, where they differ.",
    )
    clear_secrets = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        choices=[
            (name, f"Remove the stored {name.replace('_', ' ')}")
            for name in job_services.SECRET_FIELDS
        ],
    )

    class Meta:
        model = DeployTarget
        fields = [
            "strategy",
            "api_url",
            "namespace",
            "ca_certificate",
            "verify_tls",
            "health_url_template",
            "verify_allow_list",
            "verify_timeout_seconds",
            "rollout_timeout_seconds",
            "webhook_url",
            "webhook_status_url",
        ]
        widgets = {
            "ca_certificate": forms.Textarea(attrs={"rows": 2}),
            "verify_allow_list": forms.Textarea(attrs={"rows": 2}),
        }

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        names = (self.instance.deployment_names or {}) if self.instance.pk else {}
        self.initial["deployment_names"] = "\n".join(f"{k} = {v}" for k, v in names.items())
        for name in job_services.SECRET_FIELDS:
            stored = bool(self.instance.pk and getattr(self.instance, name))
            self.fields[name].help_text = (
                "Currently set; leave empty to keep it." if stored else "Currently not set."
            )

    def clean_deployment_names(self) -> dict[str, str]:
        mapping = {}
        for line in self.cleaned_data["deployment_names"].splitlines():
            if not line.strip():
                continue
            service, sep, name = line.partition("=")
            if not sep or not service.strip() or not name.strip():
                raise ValidationError(f"Write 'service = Deployment name', not {line.strip()!r}.")
            mapping[service.strip()] = name.strip()
        return mapping

    def validate_unique(self) -> None:
        pass


# --- Helpers -------------------------------------------------------------------------------------


def _errors(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    return str(exc)


def _deployment_for(request, slug: str, deployment_id: int):  # noqa: ANN001, ANN202
    project, membership = project_for(request.user, slug)
    deployment = (
        Deployment.objects.select_related(
            "project",
            "release",
            "environment",
            "requested_by",
            "override__overridden_by",
            "rollback_of",
            "replaces",
            "cancel_requested_by",
        )
        .filter(project=project, pk=deployment_id)
        .first()
    )
    if deployment is None:
        raise Http404("No such deployment.")
    request.project = project
    return deployment, membership


def _environment_for(request, slug: str, name: str):  # noqa: ANN001, ANN202
    project, membership = project_for(request.user, slug)
    environment = project.environments.filter(name=name).first()
    if environment is None:
        raise Http404("No such environment.")
    request.project = project
    return environment, membership


def _back(request, fallback: str):  # noqa: ANN001, ANN202
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect(fallback)


# --- Deployments list ----------------------------------------------------------------------------


@login_required
@require_GET
def deployment_list(request, slug: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug)
    request.project = project
    form = DeploymentFilterForm(request.GET or None)
    rows = Deployment.objects.filter(project=project).select_related(
        "release", "environment", "requested_by", "rollback_of", "override"
    )
    if form.is_valid():
        data = form.cleaned_data
        if data["environment"]:
            rows = rows.filter(environment__name=data["environment"])
        if data["status"]:
            rows = rows.filter(status=data["status"])
        if data["kind"]:
            rows = rows.filter(kind=data["kind"])
        if data["version"]:
            rows = rows.filter(version__icontains=data["version"])
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "project": project,
        "membership": membership,
        "page": page,
        "filter_form": form,
        "environments": project.environments.all(),
        "query": query.urlencode(),
        "last_event_id": events.stream_cursor(project.topic),
    }
    if request.htmx:
        return render(request, "deployments/_deployment_table.html", context)
    return render(request, "deployments/deployment_list.html", context)


# --- A deployment --------------------------------------------------------------------------------


def _tiers(deployment: Deployment) -> list[tuple[int, list[dict]]]:
    by_service: dict[str, dict] = {}
    for step in deployment.steps.all():
        row = by_service.setdefault(
            step.service_name, {"name": step.service_name, "tier": step.tier, "steps": {}}
        )
        row["steps"][step.kind] = step
    tiers: dict[int, list[dict]] = defaultdict(list)
    for row in by_service.values():
        wait = row["steps"].get(DeploymentStep.Kind.WAIT)
        detail = wait.detail if wait else {}
        row["wait"] = wait
        row["desired"] = detail.get("desired") or 0
        row["updated"] = detail.get("updated") or 0
        row["available"] = detail.get("available") or 0
        # Replica counts mean something once the rollout was watched; before that (a later
        # tier, or one skipped after a failure) "0/0" would read as a service with no replicas.
        row["started"] = wait is not None and (wait.status not in NOT_RUN or "updated" in detail)
        row["ordered"] = [row["steps"].get(kind) for kind in STEP_KINDS]
        tiers[row["tier"]].append(row)
    order = sorted(tiers, reverse=deployment.kind == Deployment.Kind.ROLLBACK)
    return [(tier, sorted(tiers[tier], key=lambda r: r["name"])) for tier in order]


def _detail_context(deployment: Deployment, membership: Membership) -> dict:
    engineer = membership.has_role(Membership.Role.ENGINEER)
    rollbackable = (
        engineer
        and deployment.kind == Deployment.Kind.DEPLOY
        and deployment.strategy != DeployTarget.Strategy.EXTERNAL
        and deployment.status
        in (Deployment.Status.SUCCEEDED, Deployment.Status.FAILED, Deployment.Status.CANCELLED)
        and deployment.steps.filter(
            kind=DeploymentStep.Kind.APPLY, status=DeploymentStep.Status.SUCCEEDED
        ).exists()
    )
    return {
        "project": deployment.project,
        "deployment": deployment,
        "membership": membership,
        "can_cancel": engineer and deployment.active and deployment.cancel_requested_at is None,
        "can_rollback": rollbackable,
        "rollbacks": list(deployment.rollbacks.order_by("-id")),
        "step_kinds": [(kind, DeploymentStep.Kind(kind).label) for kind in STEP_KINDS],
    }


@login_required
@require_GET
def deployment_detail(request, slug: str, deployment_id: int):  # noqa: ANN001, ANN201
    deployment, membership = _deployment_for(request, slug, deployment_id)
    # The id first, the rows second: an event between the two is applied again, never missed.
    last_event_id = events.stream_cursor(deployment.topic)
    context = _detail_context(deployment, membership)
    context["tiers"] = _tiers(deployment)
    if request.htmx:
        return render(request, "deployments/_deployment_state.html", context)
    lines = list(deployment.log_lines.order_by("-seq")[:LOG_LINES_SHOWN])
    lines.reverse()
    context.update(
        {
            "log_lines": lines,
            "last_seq": lines[-1].seq if lines else 0,
            "last_event_id": last_event_id,
        }
    )
    return render(request, "deployments/deployment_detail.html", context)


@login_required
@require_POST
def deployment_cancel(request, slug: str, deployment_id: int):  # noqa: ANN001, ANN201
    deployment, membership = _deployment_for(request, slug, deployment_id)
    try:
        deployment = job_services.request_cancel(request.user, membership, deployment)
    except (ValidationError, PermissionDenied) as exc:
        messages.error(request, _errors(exc))
    else:
        if deployment.status == Deployment.Status.CANCELLED:
            messages.success(request, f"Deployment #{deployment.pk} cancelled.")
        else:
            messages.success(request, "Cancelling: the deployment stops after its current step.")
    return redirect("deployment-detail", slug=slug, deployment_id=deployment_id)


@login_required
@require_POST
def deployment_rollback(request, slug: str, deployment_id: int):  # noqa: ANN001, ANN201
    deployment, membership = _deployment_for(request, slug, deployment_id)
    form = RollbackForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        rollback = job_services.request_rollback(request.user, membership, deployment, reason)
    except DeployRefused as exc:
        messages.error(request, " ".join(r.message for r in exc.decision.reasons))
    except (ValidationError, PermissionDenied, Conflict) as exc:
        messages.error(request, _errors(exc))
    else:
        messages.success(request, f"Rolling back deployment #{deployment.pk}.")
        return redirect("deployment-detail", slug=slug, deployment_id=rollback.pk)
    return redirect("deployment-detail", slug=slug, deployment_id=deployment_id)


@login_required
@require_GET
def deployment_snapshot(request, slug: str, deployment_id: int):  # noqa: ANN001, ANN201
    deployment, _ = _deployment_for(request, slug, deployment_id)
    if not deployment.snapshot_path:
        raise Http404("No snapshot was taken.")
    try:
        handle = default_storage.open(deployment.snapshot_path, "rb")
    except (FileNotFoundError, OSError) as exc:
        raise Http404("The snapshot is no longer stored.") from exc
    return FileResponse(
        handle,
        as_attachment=True,
        filename=f"deployment-{deployment.pk}-snapshot.yaml",
        content_type="application/yaml",
    )


@login_required
@require_POST
def deployment_start(request, slug: str, release_id: int, environment: str):  # noqa: ANN001, ANN201
    project, membership = project_for(request.user, slug)
    release = Release.objects.filter(project=project, pk=release_id).first()
    env = project.environments.filter(name=environment).first()
    if release is None or env is None:
        raise Http404("No such release or environment.")
    fallback = reverse("release-detail", args=[slug, release_id])
    form = StartForm(request.POST)
    form.is_valid()
    try:
        deployment, _ = job_services.start_deployment(
            request.user,
            membership,
            release,
            env,
            override_reason=form.cleaned_data.get("override_reason", ""),
        )
    except DeployRefused as exc:
        messages.error(
            request,
            f"Not deployed to {env.name}: " + " ".join(r.message for r in exc.decision.reasons),
        )
    except (ValidationError, PermissionDenied, Conflict) as exc:
        messages.error(request, _errors(exc))
    else:
        # No flash message: the deployment page says itself what is happening, live, and a
        # "Deploying ..." line outside it would outlive the deployment it announced.
        return redirect("deployment-detail", slug=slug, deployment_id=deployment.pk)
    return _back(request, fallback)


# --- An environment ------------------------------------------------------------------------------


def _unverified(rows: Iterable[DeployedVersion]) -> dict[int, str]:
    """{service id: why} for services running a version their deployment rolled out but did not
    verify (cancelled or failed after the rollout, or still verifying). What runs where is
    recorded once a rollout completes, so the page says what the cluster runs, and this says
    how far it can be trusted."""
    rows = list(rows)
    pending = {
        row.deployment_id: row.deployment
        for row in rows
        if row.deployment_id and row.deployment.status != Deployment.Status.SUCCEEDED
    }
    if not pending:
        return {}
    verify = {
        (deployment_id, name): status
        for deployment_id, name, status in DeploymentStep.objects.filter(
            deployment_id__in=list(pending), kind=DeploymentStep.Kind.VERIFY
        ).values_list("deployment_id", "service_name", "status")
    }
    why = {}
    for row in rows:
        deployment = pending.get(row.deployment_id)
        if deployment is None:
            continue
        status = verify.get((deployment.pk, row.service.name))
        if status == DeploymentStep.Status.SUCCEEDED:
            continue
        if deployment.active:
            why[row.service_id] = "rolled out, verifying"
        elif status == DeploymentStep.Status.FAILED:
            why[row.service_id] = "rolled out, verification failed"
        else:
            why[row.service_id] = (
                f"rolled out, not verified (deployment {deployment.get_status_display().lower()})"
            )
    return why


def _environment_context(environment, membership: Membership) -> dict:  # noqa: ANN001
    project = environment.project
    running = {
        row.service_id: row
        for row in DeployedVersion.objects.filter(environment=environment).select_related(
            "deployment", "service"
        )
    }
    unverified = _unverified(running.values())
    rows = [
        (service, running.get(service.pk), unverified.get(service.pk))
        for service in project.services.all()
    ]
    lock = (
        EnvironmentLock.objects.filter(environment=environment, released_at__isnull=True)
        .select_related("locked_by")
        .first()
    )
    active = (
        Deployment.objects.filter(environment=environment, status__in=Deployment.ACTIVE)
        .select_related("requested_by")
        .first()
    )
    recent = list(
        Deployment.objects.filter(environment=environment).select_related("requested_by")[:10]
    )
    return {
        "project": project,
        "environment": environment,
        "membership": membership,
        "running": rows,
        "lock": lock,
        "active": active,
        "recent": recent,
        "is_engineer": membership.has_role(Membership.Role.ENGINEER),
        "is_admin": membership.has_role(Membership.Role.ADMIN),
        "may_unlock": lock is not None and may_unlock(membership, lock),
    }


def _deployable(environment, membership: Membership) -> list[dict]:  # noqa: ANN001
    """Recent releases that target the environment, each with its decision and Deploy button."""
    targets = (
        ReleaseTarget.objects.filter(environment=environment)
        .exclude(status__in=[ReleaseTarget.Status.DRAFT, ReleaseTarget.Status.CANCELLED])
        .select_related("release__project", "environment")
        .order_by("-release__created_at", "-release_id")[:5]
    )
    return [
        {"release": t.release, "target": t, "decision": decide(t.release, environment)}
        for t in targets
    ]


@login_required
@require_GET
def environment_detail(request, slug: str, environment: str):  # noqa: ANN001, ANN201
    env, membership = _environment_for(request, slug, environment)
    context = _environment_context(env, membership)
    context["last_event_id"] = events.stream_cursor(env.project.topic)
    if request.htmx:
        return render(request, "deployments/_environment_live.html", context)
    target = DeployTarget.objects.filter(environment=env).first()
    context.update(
        {
            "target": target,
            "target_form": DeployTargetForm(instance=target) if context["is_admin"] else None,
            "lock_form": LockForm(),
            "deployable": _deployable(env, membership),
        }
    )
    return render(request, "deployments/environment_detail.html", context)


@login_required
@require_POST
def environment_lock(request, slug: str, environment: str):  # noqa: ANN001, ANN201
    env, membership = _environment_for(request, slug, environment)
    form = LockForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why the environment is locked.")
    else:
        try:
            lock_environment(request.user, membership, env, form.cleaned_data["reason"])
        except (ValidationError, PermissionDenied, Conflict) as exc:
            messages.error(request, _errors(exc))
        else:
            messages.success(
                request, f"{env.name} is locked: nothing deploys until it is unlocked."
            )
    return redirect("environment-detail", slug=slug, environment=environment)


@login_required
@require_POST
def environment_unlock(request, slug: str, environment: str):  # noqa: ANN001, ANN201
    env, membership = _environment_for(request, slug, environment)
    form = LockForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        unlock_environment(request.user, membership, env, reason)
    except (ValidationError, PermissionDenied) as exc:
        messages.error(request, _errors(exc))
    else:
        messages.success(request, f"{env.name} is unlocked.")
    return redirect("environment-detail", slug=slug, environment=environment)


@login_required
@require_POST
def environment_target(request, slug: str, environment: str):  # noqa: ANN001, ANN201
    env, membership = _environment_for(request, slug, environment)
    if not membership.has_role(Membership.Role.ADMIN):
        raise PermissionDenied("Only a project admin changes how deployments reach an environment.")
    target = DeployTarget.objects.filter(environment=env).first()
    form = DeployTargetForm(request.POST, instance=target or DeployTarget(environment=env))
    if form.is_valid():
        data = dict(form.cleaned_data)
        clear = data.pop("clear_secrets", [])
        try:
            job_services.save_deploy_target(
                request.user, membership, env, clear_secrets=clear, **data
            )
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                form.add_error(None, exc.messages)
        else:
            messages.success(request, f"Saved how deployments reach {env.name}.")
            return redirect("environment-detail", slug=slug, environment=environment)
    context = _environment_context(env, membership)
    context.update(
        {
            "target": target,
            "target_form": form,
            "lock_form": LockForm(),
            "deployable": _deployable(env, membership),
            "last_event_id": events.stream_cursor(env.project.topic),
        }
    )
    return render(request, "deployments/environment_detail.html", context, status=400)


# --- The project overview's panel ----------------------------------------------------------------


def overview_panels(project, environments: list) -> dict[int, dict[str, str]]:  # noqa: ANN001
    """What the overview shows per environment: the versions running and the last deployment."""
    from django.db.models import Count
    from django.utils.timesince import timesince

    ids = [env.pk for env in environments]
    panels: dict[int, dict[str, str]] = {pk: {} for pk in ids}
    counts: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for row in (
        DeployedVersion.objects.filter(environment_id__in=ids)
        .values("environment_id", "version")
        .annotate(n=Count("id"))
        .order_by("environment_id", "-n", "version")
    ):
        counts[row["environment_id"]].append((row["version"], row["n"]))
    for env_id, versions in counts.items():
        panels[env_id]["deployed"] = ", ".join(
            f"{version} on {n} service{'s' if n != 1 else ''}" for version, n in versions
        )
    latest = (
        Deployment.objects.filter(environment_id__in=ids)
        .values("environment_id")
        .annotate(last=Max("id"))
        .values_list("last", flat=True)
    )
    for d in Deployment.objects.filter(pk__in=list(latest)):
        panels[d.environment_id]["last_deployment"] = (
            f"#{d.pk} {d.get_kind_display().lower()} {d.version}: "
            f"{d.get_status_display().lower()}, {timesince(d.created_at)} ago"
        )
    return panels
