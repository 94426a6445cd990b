"""REST API of deployment jobs (under /api/v1/). Thin: serializers check shapes, services act.

Answers that are not plain successes:

* a refused deployment (the go/no-go decision says no, or another deployment is active in the
  environment) is **409** with ``{"decision": "no-go", "reasons": [{"code", "message",
  "link"}]}``: the request was well-formed, the state of the release or environment refuses it;
  a locked environment adds ``"code": "locked"`` and ``"lock": {"locked_by", "reason",
  "locked_at"}`` (no override gets past a lock);
* an ``Idempotency-Key`` reused with a different body is **422**;
* a replayed ``Idempotency-Key`` answers **200** with the deployment the first request made
  (the first answer was 201);
* outsiders get 404 for everything of a project they are not in.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from django.http import Http404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from releasecenter.access import object_for, project_for

from .models import (
    Deployment,
    DeploymentLogLine,
    DeploymentStep,
    DeployTarget,
    Release,
)
from .services import jobs as job_services
from .services.releases import (
    DeployRefused,
    EnvironmentLocked,
    lock_environment,
    unlock_environment,
)

# --- Serializers ---------------------------------------------------------------------------------

# Several apps have a "status" field. drf-spectacular names a choice set after its component
# when it appears in one component only, and warns when one appears in several; so each of ours
# appears once, and the detail view refers to the list view's enum.
REPORTABLE_STEP_STATUSES = [s for s in DeploymentStep.Status.values if s != "pending"]


@extend_schema_field({"$ref": "#/components/schemas/DeploymentStatusEnum"})
class DeploymentStatusRef(serializers.CharField):
    """Deployment.status, described by reference to the enum the Deployment component makes."""


class DeployRefusalReasonSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    link = serializers.CharField()


class HeldLockSerializer(serializers.Serializer):
    locked_by = serializers.CharField()
    reason = serializers.CharField()
    locked_at = serializers.DateTimeField()


class DeployRefusalSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["no-go"])
    code = serializers.CharField(required=False, help_text="'locked' when a lock refuses it.")
    lock = HeldLockSerializer(required=False)
    reasons = DeployRefusalReasonSerializer(many=True)


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


class DeploymentStepSerializer(serializers.ModelSerializer):
    service = serializers.CharField(source="service_name")
    log = serializers.SerializerMethodField()

    class Meta:
        model = DeploymentStep
        fields = [
            "id",
            "service",
            "tier",
            "kind",
            "status",
            "started_at",
            "finished_at",
            "message",
            "detail",
            "log",
        ]

    def get_log(self, step: DeploymentStep) -> list[str]:
        return [line.text for line in step.log_lines.all()]


class DeploymentSerializer(serializers.ModelSerializer):
    environment = serializers.CharField(source="environment.name")
    project = serializers.CharField(source="project.slug")
    release = serializers.IntegerField(source="release_id")
    requested_by = serializers.SerializerMethodField()
    override_reason = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = Deployment
        fields = [
            "id",
            "url",
            "project",
            "release",
            "version",
            "environment",
            "kind",
            "strategy",
            "status",
            "reason",
            "requested_by",
            "override_reason",
            "replaces",
            "rollback_of",
            "created_at",
            "started_at",
            "finished_at",
            "heartbeat_at",
            "cancel_requested_at",
        ]

    def get_requested_by(self, deployment: Deployment) -> str | None:
        return deployment.requested_by.username if deployment.requested_by_id else None

    def get_override_reason(self, deployment: Deployment) -> str | None:
        return deployment.override.reason if deployment.override_id else None

    def get_url(self, deployment: Deployment) -> str:
        return reverse("deployment-detail", args=[deployment.project.slug, deployment.pk])


class DeploymentDetailSerializer(DeploymentSerializer):
    status = DeploymentStatusRef(read_only=True)
    steps = DeploymentStepSerializer(many=True, read_only=True)

    class Meta(DeploymentSerializer.Meta):
        fields = [*DeploymentSerializer.Meta.fields, "steps"]


class StartSerializer(serializers.Serializer):
    environment = serializers.CharField(max_length=60)
    override_reason = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=2000,
        help_text="A lead's reason to deploy despite a no-go (break-glass, audited).",
    )
    expected_commit = serializers.CharField(
        required=False,
        max_length=64,
        help_text="Refuse (409) if the release has moved to another commit meanwhile.",
    )


class RollbackSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class ProgressSerializer(serializers.Serializer):
    desired = serializers.IntegerField(min_value=0)
    updated = serializers.IntegerField(min_value=0)
    available = serializers.IntegerField(min_value=0)


class StepReportSerializer(serializers.Serializer):
    service = serializers.CharField(max_length=80)
    kind = serializers.ChoiceField(choices=DeploymentStep.Kind.choices)
    status = serializers.ChoiceField(choices=REPORTABLE_STEP_STATUSES)
    message = serializers.CharField(required=False, allow_blank=True, max_length=500)
    log = serializers.ListField(
        child=serializers.CharField(max_length=2000, allow_blank=True),
        required=False,
        max_length=200,
    )
    progress = ProgressSerializer(required=False)


class FinishSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["succeeded", "failed"])
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class LockSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)


class UnlockSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=2000, help_text="Why the lock can be released (kept in the audit log)."
    )


class LockStateSerializer(serializers.Serializer):
    environment = serializers.CharField()
    locked = serializers.BooleanField()
    reason = serializers.CharField(allow_blank=True)
    locked_by = serializers.CharField(allow_null=True)
    locked_at = serializers.DateTimeField(allow_null=True)


SECRET_STATE = serializers.ChoiceField(choices=["set", "not set"], read_only=True)


class DeployTargetSerializer(serializers.ModelSerializer):
    """Secrets are write-only; reading says only whether each is set."""

    bearer_token = serializers.CharField(write_only=True, required=False, allow_blank=True)
    kubeconfig = serializers.CharField(write_only=True, required=False, allow_blank=True)
    webhook_secret = serializers.CharField(write_only=True, required=False, allow_blank=True)
    bearer_token_state = SECRET_STATE
    kubeconfig_state = SECRET_STATE
    webhook_secret_state = SECRET_STATE
    clear_secrets = serializers.ListField(
        child=serializers.ChoiceField(choices=job_services.SECRET_FIELDS),
        write_only=True,
        required=False,
    )

    class Meta:
        model = DeployTarget
        fields = [
            *job_services.TARGET_FIELDS,
            "bearer_token",
            "kubeconfig",
            "webhook_secret",
            "bearer_token_state",
            "kubeconfig_state",
            "webhook_secret_state",
            "clear_secrets",
            "updated_at",
        ]
        read_only_fields = ["updated_at"]

    def to_representation(self, instance: DeployTarget) -> dict:
        data = super().to_representation(instance)
        for name in job_services.SECRET_FIELDS:
            data[f"{name}_state"] = "set" if getattr(instance, name) else "not set"
        return data


# --- Helpers -------------------------------------------------------------------------------------


def _deployments():  # noqa: ANN202
    return Deployment.objects.select_related("project", "environment", "requested_by", "override")


def _deployment(request, pk: int, minimum: str = "viewer") -> tuple[Deployment, object]:  # noqa: ANN001
    return object_for(request.user, _deployments(), minimum=minimum, pk=pk)


def _refused(exc: DeployRefused) -> Response:
    body = exc.decision.as_dict()
    if isinstance(exc, EnvironmentLocked):
        body["code"] = exc.code
        body["lock"] = HeldLockSerializer(
            {
                "locked_by": exc.lock.locked_by.username,
                "reason": exc.lock.reason,
                "locked_at": exc.lock.locked_at,
            }
        ).data
    return Response(body, status=status.HTTP_409_CONFLICT)


REFUSALS = {
    409: DeployRefusalSerializer,
    422: DetailSerializer,
    400: OpenApiTypes.OBJECT,
    403: DetailSerializer,
    404: DetailSerializer,
}


# --- Views ---------------------------------------------------------------------------------------


class ReleaseDeployments(APIView):
    """Start a deployment of a release, or list the release's deployments."""

    @extend_schema(responses={200: DeploymentSerializer(many=True)})
    def get(self, request, release_id: int):  # noqa: ANN001, ANN201
        release, _ = object_for(request.user, Release.objects.all(), pk=release_id)
        rows = _deployments().filter(release=release)[:200]
        return Response(DeploymentSerializer(rows, many=True).data)

    @extend_schema(
        request=StartSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Repeat a request safely: the same key and body answer with the "
                "deployment the first request made; the same key with another body is 422.",
            )
        ],
        responses={201: DeploymentSerializer, 200: DeploymentSerializer, **REFUSALS},
    )
    def post(self, request, release_id: int):  # noqa: ANN001, ANN201
        release, membership = object_for(
            request.user, Release.objects.select_related("project"), pk=release_id
        )
        body = StartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        environment = membership.project.environments.filter(name=data["environment"]).first()
        if environment is None:
            raise DjangoValidationError(
                {"environment": f"No environment '{data['environment']}' in this project."}
            )
        try:
            deployment, created = job_services.start_deployment(
                request.user,
                membership,
                release,
                environment,
                override_reason=data.get("override_reason", ""),
                idempotency_key=request.headers.get("Idempotency-Key", ""),
                expected_commit=data.get("expected_commit"),
            )
        except DeployRefused as exc:
            return _refused(exc)
        except job_services.IdempotencyMismatch as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)
        deployment = _deployments().get(pk=deployment.pk)
        return Response(
            DeploymentSerializer(deployment).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class ProjectDeployments(generics.ListAPIView):
    """A project's deployments, newest first; filter with ?environment=, ?status=, ?kind=."""

    serializer_class = DeploymentSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("environment", str),
            OpenApiParameter("status", str, enum=Deployment.Status.values),
            OpenApiParameter("kind", str, enum=Deployment.Kind.values),
        ]
    )
    def get(self, request, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        return super().get(request, *args, **kwargs)

    def get_queryset(self):  # noqa: ANN201
        project, _ = project_for(self.request.user, self.kwargs["slug"])
        rows = _deployments().filter(project=project)
        params = self.request.query_params
        if params.get("environment"):
            rows = rows.filter(environment__name=params["environment"])
        if params.get("status"):
            rows = rows.filter(status=params["status"])
        if params.get("kind"):
            rows = rows.filter(kind=params["kind"])
        return rows


class DeploymentDetail(APIView):
    """A deployment with its status and its steps (each with its log lines)."""

    @extend_schema(responses={200: DeploymentDetailSerializer, 404: DetailSerializer})
    def get(self, request, pk: int):  # noqa: ANN001, ANN201
        deployment, _ = _deployment(request, pk)
        steps = DeploymentStep.objects.filter(deployment=deployment).prefetch_related(
            Prefetch("log_lines", queryset=DeploymentLogLine.objects.order_by("seq"))
        )
        deployment = (
            _deployments().prefetch_related(Prefetch("steps", queryset=steps)).get(pk=deployment.pk)
        )
        return Response(DeploymentDetailSerializer(deployment).data)


class DeploymentRollback(APIView):
    """Roll a finished deployment back: answers 201 with the new deployment of kind rollback."""

    @extend_schema(request=RollbackSerializer, responses={201: DeploymentSerializer, **REFUSALS})
    def post(self, request, pk: int):  # noqa: ANN001, ANN201
        deployment, membership = _deployment(request, pk)
        body = RollbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            rollback = job_services.request_rollback(
                request.user, membership, deployment, body.validated_data.get("reason", "")
            )
        except DeployRefused as exc:
            return _refused(exc)
        rollback = _deployments().get(pk=rollback.pk)
        return Response(DeploymentSerializer(rollback).data, status=status.HTTP_201_CREATED)


class DeploymentCancel(APIView):
    """Cancel: a queued deployment at once, a running one after its current step (202)."""

    @extend_schema(request=None, responses={202: DeploymentSerializer, **REFUSALS})
    def post(self, request, pk: int):  # noqa: ANN001, ANN201
        deployment, membership = _deployment(request, pk)
        deployment = job_services.request_cancel(request.user, membership, deployment)
        deployment = _deployments().get(pk=deployment.pk)
        return Response(DeploymentSerializer(deployment).data, status=status.HTTP_202_ACCEPTED)


class ExternalStart(APIView):
    """External deployments: CI reports that it started (queued → running)."""

    @extend_schema(request=None, responses={200: DeploymentSerializer, **REFUSALS})
    def post(self, request, pk: int):  # noqa: ANN001, ANN201
        deployment, membership = _deployment(request, pk)
        deployment = job_services.report_start(request.user, membership, deployment)
        return Response(DeploymentSerializer(_deployments().get(pk=deployment.pk)).data)


class ExternalStep(APIView):
    """External deployments: CI reports a step's state, log lines and replica counts."""

    @extend_schema(
        request=StepReportSerializer, responses={200: DeploymentStepSerializer, **REFUSALS}
    )
    def post(self, request, pk: int):  # noqa: ANN001, ANN201
        deployment, membership = _deployment(request, pk)
        body = StepReportSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        step = job_services.report_step(request.user, membership, deployment, **body.validated_data)
        step = DeploymentStep.objects.prefetch_related("log_lines").get(pk=step.pk)
        return Response(DeploymentStepSerializer(step).data)


class ExternalFinish(APIView):
    """External deployments: CI reports the end (succeeded, or failed with a reason)."""

    @extend_schema(request=FinishSerializer, responses={200: DeploymentSerializer, **REFUSALS})
    def post(self, request, pk: int):  # noqa: ANN001, ANN201
        deployment, membership = _deployment(request, pk)
        body = FinishSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        deployment = job_services.report_finish(
            request.user, membership, deployment, **body.validated_data
        )
        return Response(DeploymentSerializer(_deployments().get(pk=deployment.pk)).data)


def _environment(request, slug: str, name: str, minimum: str = "viewer"):  # noqa: ANN001, ANN202
    project, membership = project_for(request.user, slug, minimum)
    environment = project.environments.filter(name=name).first()
    if environment is None:
        raise Http404("No such environment.")
    return environment, membership


def _lock_state(environment) -> dict:  # noqa: ANN001
    lock = environment.locks.filter(released_at__isnull=True).select_related("locked_by").first()
    return {
        "environment": environment.name,
        "locked": lock is not None,
        "reason": lock.reason if lock else "",
        "locked_by": lock.locked_by.username if lock else None,
        "locked_at": lock.locked_at if lock else None,
    }


class EnvironmentLockView(APIView):
    """The manual lock of an environment: nothing deploys while it is held."""

    @extend_schema(responses={200: LockStateSerializer})
    def get(self, request, slug: str, name: str):  # noqa: ANN001, ANN201
        environment, _ = _environment(request, slug, name)
        return Response(LockStateSerializer(_lock_state(environment)).data)

    @extend_schema(request=LockSerializer, responses={201: LockStateSerializer, **REFUSALS})
    def post(self, request, slug: str, name: str):  # noqa: ANN001, ANN201
        environment, membership = _environment(request, slug, name)
        body = LockSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        lock_environment(request.user, membership, environment, body.validated_data["reason"])
        return Response(
            LockStateSerializer(_lock_state(environment)).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(request=UnlockSerializer, responses={200: LockStateSerializer, **REFUSALS})
    def delete(self, request, slug: str, name: str):  # noqa: ANN001, ANN201
        """Release the lock: its holder or a project admin, with a reason."""
        environment, membership = _environment(request, slug, name)
        body = UnlockSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        unlock_environment(request.user, membership, environment, body.validated_data["reason"])
        return Response(LockStateSerializer(_lock_state(environment)).data)


class DeployTargetView(APIView):
    """How deployments reach an environment. Admins write; secrets are never read back."""

    @extend_schema(responses={200: DeployTargetSerializer, 404: DetailSerializer})
    def get(self, request, slug: str, name: str):  # noqa: ANN001, ANN201
        environment, _ = _environment(request, slug, name)
        target = DeployTarget.objects.filter(environment=environment).first()
        if target is None:
            raise Http404("No deploy target yet.")
        return Response(DeployTargetSerializer(target).data)

    @extend_schema(
        request=DeployTargetSerializer,
        responses={200: DeployTargetSerializer, **REFUSALS},
    )
    def put(self, request, slug: str, name: str):  # noqa: ANN001, ANN201
        environment, membership = _environment(request, slug, name)
        body = DeployTargetSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        target = job_services.save_deploy_target(
            request.user, membership, environment, **body.validated_data
        )
        return Response(DeployTargetSerializer(target).data)
