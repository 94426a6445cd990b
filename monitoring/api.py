"""REST API for health checks and smoke suites. Thin: serializers check shapes, services act.

Outsiders get 404 for every object of a project they are not in (releasecenter.access).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from releasecenter.access import object_for, project_for
from releasecenter.models import Environment, Membership

from . import heartbeats, services
from .models import METHODS, Check, CheckResult, EnvironmentMonitoring

# --- Serializers ------------------------------------------------------------------------------

# Plain strings rather than enums: other apps' "status" fields would collide in the schema.
STATUS_HELP = '"unknown" (not run yet), "passing" or "failing".'


@extend_schema_field(
    {
        "type": "array",
        "items": {
            "oneOf": [
                {
                    "type": "object",
                    "description": 'e.g. {"type": "json", "path": "$.status", "op": "equals", '
                    '"value": "ok"}',
                    "additionalProperties": True,
                },
                {"type": "string", "description": "compact form, e.g. '$.status == \"ok\"'"},
            ]
        },
    }
)
class AssertionsField(serializers.JSONField):
    """A list of assertion objects, or of strings in the compact form."""


class HeadersField(serializers.DictField):
    child = serializers.CharField(allow_blank=True, trim_whitespace=False)


def _is_member(request: Any, project_id: int) -> bool:
    """Whether the requesting user belongs to the project (once per request and project)."""
    cache = request.__dict__.setdefault("_rc_member_of", {})
    if project_id not in cache:
        cache[project_id] = Membership.objects.filter(
            user_id=request.user.pk, project_id=project_id
        ).exists()
    return cache[project_id]


class CheckSerializer(serializers.ModelSerializer):
    environment = serializers.SlugRelatedField(
        slug_field="name", queryset=Environment.objects.none()
    )
    service = serializers.CharField(
        source="service.name", required=False, allow_null=True, default=None
    )
    method = serializers.ChoiceField(choices=METHODS, default="GET")
    url = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="Absolute URL, a path joined to the environment's base URL, or empty for the "
        "service's health path.",
    )
    headers = HeadersField(required=False, default=dict)
    secret_headers = HeadersField(
        required=False,
        write_only=True,
        help_text="Encrypted at rest, never returned. Omit to keep, {} to remove.",
    )
    assertions = AssertionsField(
        required=False, help_text="Omitted: the status must be 200 or 204."
    )
    probe = serializers.ChoiceField(
        choices=Check.Probe.choices,
        default=Check.Probe.HTTP,
        help_text='"http" (a request), or "tcp" (url tcp://host:port; `body` is sent as a line '
        "and `expect` is a regex the reply must match).",
    )
    expect = serializers.CharField(required=False, allow_blank=True, default="", max_length=500)
    heartbeat_period_seconds = serializers.IntegerField(
        required=False, allow_null=True, default=None, help_text="Heartbeat: expected every N s."
    )
    heartbeat_grace_seconds = serializers.IntegerField(
        required=False, allow_null=True, default=None, help_text="Heartbeat: allowed lateness."
    )
    heartbeat_cron = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=100,
        help_text='Heartbeat: or expected at these times ("0 3 * * *").',
    )
    heartbeat_timezone = serializers.CharField(
        required=False, allow_blank=True, default="UTC", max_length=64
    )
    ping_url = serializers.SerializerMethodField(
        help_text="Heartbeat: the secret URL the job pings (GET or POST; /start, /fail). Members "
        "of the project only."
    )
    certificate = serializers.SerializerMethodField(
        help_text="HTTPS: the certificate the target last served (not_after, issuer, names, "
        "tls_version), or null."
    )
    resolved_url = serializers.CharField(read_only=True)
    suite = serializers.IntegerField(source="parent_id", read_only=True, allow_null=True)
    kind = serializers.CharField(read_only=True, help_text='"check" or "suite".')
    status = serializers.CharField(read_only=True, help_text=STATUS_HELP)

    class Meta:
        model = Check
        fields = [
            "id",
            "kind",
            "probe",
            "suite",
            "environment",
            "service",
            "name",
            "method",
            "url",
            "resolved_url",
            "expect",
            "certificate",
            "heartbeat_period_seconds",
            "heartbeat_grace_seconds",
            "heartbeat_cron",
            "heartbeat_timezone",
            "ping_url",
            "last_ping_at",
            "heartbeat_due_at",
            "headers",
            "secret_headers",
            "secret_header_names",
            "body",
            "assertions",
            "timeout_seconds",
            "follow_redirects",
            "interval_seconds",
            "enabled",
            "status",
            "status_changed_at",
            "last_run_at",
            "last_passed",
            "last_status_code",
            "last_latency_ms",
            "next_run_at",
            "created_at",
        ]
        read_only_fields = [
            "id",
            "kind",
            "last_ping_at",
            "heartbeat_due_at",
            "secret_header_names",
            "status",
            "status_changed_at",
            "last_run_at",
            "last_passed",
            "last_status_code",
            "last_latency_ms",
            "next_run_at",
            "created_at",
        ]
        extra_kwargs = {
            "body": {"required": False},
            "timeout_seconds": {"required": False},
            "interval_seconds": {"required": False},
        }

    def __init__(self, *args: Any, project: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if project is not None:
            self.fields["environment"].queryset = project.environments.all()

    def get_ping_url(self, check: Check) -> str | None:
        if check.probe != Check.Probe.HEARTBEAT or not check.ping_key:
            return None
        request = self.context.get("request")
        if request is None or not _is_member(request, check.project_id):
            return None
        return request.build_absolute_uri(heartbeats.ping_path(check))

    def get_certificate(self, check: Check) -> dict[str, Any] | None:
        if check.cert_not_after is None:
            return None
        return {
            "not_after": check.cert_not_after.isoformat(),
            "issuer": check.cert_issuer,
            "names": check.cert_names,
            "tls_version": check.tls_version,
        }

    def service_arguments(self) -> dict[str, Any]:
        data = dict(self.validated_data)
        service = data.pop("service", None)
        data["service"] = service["name"] if isinstance(service, dict) else service
        return data


class StepSerializer(CheckSerializer):
    class Meta(CheckSerializer.Meta):
        fields = [
            f
            for f in CheckSerializer.Meta.fields
            if f not in ("environment", "interval_seconds", "enabled", "next_run_at", "status")
        ]


class StepInputSerializer(serializers.Serializer):
    """One step of a suite being created."""

    name = serializers.CharField(max_length=120)
    service = serializers.CharField(required=False, allow_null=True, default=None)
    method = serializers.ChoiceField(choices=METHODS, default="GET")
    url = serializers.CharField(required=False, allow_blank=True, default="")
    headers = HeadersField(required=False, default=dict)
    secret_headers = HeadersField(required=False)
    body = serializers.CharField(required=False, allow_blank=True, default="")
    assertions = AssertionsField(
        required=False, help_text="Omitted: the status must be 200 or 204."
    )
    timeout_seconds = serializers.FloatField(required=False, default=10.0)
    follow_redirects = serializers.BooleanField(required=False, default=False)


class SuiteSerializer(serializers.ModelSerializer):
    environment = serializers.SlugRelatedField(
        slug_field="name", queryset=Environment.objects.none()
    )
    service = serializers.CharField(
        source="service.name", required=False, allow_null=True, default=None
    )
    steps = serializers.SerializerMethodField()
    status = serializers.CharField(read_only=True, help_text=STATUS_HELP)

    class Meta:
        model = Check
        fields = [
            "id",
            "environment",
            "service",
            "name",
            "interval_seconds",
            "enabled",
            "status",
            "status_changed_at",
            "last_run_at",
            "last_passed",
            "last_latency_ms",
            "next_run_at",
            "steps",
            "created_at",
        ]
        read_only_fields = [
            "id",
            "status",
            "status_changed_at",
            "last_run_at",
            "last_passed",
            "last_latency_ms",
            "next_run_at",
            "created_at",
        ]
        extra_kwargs = {"interval_seconds": {"required": False}}

    def __init__(self, *args: Any, project: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if project is not None:
            self.fields["environment"].queryset = project.environments.all()

    @extend_schema_field(StepSerializer(many=True))
    def get_steps(self, suite: Check) -> list[dict[str, Any]]:
        steps = suite.steps.select_related("environment", "service").order_by("position", "pk")
        return StepSerializer(steps, many=True).data


class NewSuiteSerializer(SuiteSerializer):
    steps = StepInputSerializer(many=True, write_only=True)

    class Meta(SuiteSerializer.Meta):
        pass


class CheckFailureSerializer(serializers.Serializer):
    message = serializers.CharField()
    expected = serializers.JSONField(allow_null=True)
    actual = serializers.JSONField(allow_null=True)
    assertion = serializers.JSONField(allow_null=True)
    rule = serializers.CharField(required=False, help_text="The address guard's rule, if refused.")
    step = serializers.CharField(required=False, help_text="The suite step that failed.")


class StepResultSerializer(serializers.Serializer):
    step = serializers.CharField()
    check_id = serializers.IntegerField()
    passed = serializers.BooleanField()
    status_code = serializers.IntegerField(allow_null=True)
    latency_ms = serializers.FloatField(allow_null=True)
    failures = CheckFailureSerializer(many=True)


class CheckResultSerializer(serializers.ModelSerializer):
    failures = CheckFailureSerializer(many=True)
    steps = StepResultSerializer(many=True, source="details")

    class Meta:
        model = CheckResult
        fields = [
            "id",
            "started_at",
            "passed",
            "status_code",
            "latency_ms",
            "error",
            "failures",
            "excerpt",
            "steps",
            "trigger",
        ]


class CheckRunSerializer(serializers.Serializer):
    check_id = serializers.IntegerField()
    result_id = serializers.IntegerField(allow_null=True)
    passed = serializers.BooleanField()
    status_code = serializers.IntegerField(allow_null=True)
    latency_ms = serializers.FloatField(allow_null=True)
    failures = CheckFailureSerializer(many=True)
    error = serializers.CharField(allow_null=True)
    excerpt = serializers.CharField(allow_blank=True)
    steps = StepResultSerializer(many=True)
    started_at = serializers.DateTimeField()


class EnvironmentMonitoringSerializer(serializers.ModelSerializer):
    environment = serializers.CharField(source="environment.name", read_only=True)
    allow_list = serializers.ListField(
        child=serializers.CharField(max_length=300),
        source="allow_entries",
        required=False,
        help_text='Addresses, CIDRs or host names, optionally with ":port".',
    )
    contact_emails = serializers.ListField(
        child=serializers.EmailField(), source="emails", required=False
    )
    webhook_url = serializers.CharField(
        write_only=True, required=False, allow_blank=True, help_text="Never returned."
    )
    webhook_set = serializers.SerializerMethodField()
    proxy_url = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        help_text="http://host:port of a proxy for this environment's HTTP checks (admins); "
        "judged by the address guard. Never returned: see `proxy`.",
    )
    proxy = serializers.CharField(source="proxy_origin", read_only=True)
    client_certificate = serializers.CharField(
        required=False, allow_blank=True, help_text="PEM certificate for mutual TLS."
    )
    client_key = serializers.CharField(
        write_only=True, required=False, allow_blank=True, help_text="PEM key. Never returned."
    )

    class Meta:
        model = EnvironmentMonitoring
        fields = [
            "environment",
            "allow_list",
            "allow_public",
            "contact_emails",
            "webhook_url",
            "webhook_set",
            "proxy_url",
            "proxy",
            "client_certificate",
            "client_key",
            "updated_at",
        ]
        read_only_fields = ["updated_at"]
        extra_kwargs = {"allow_public": {"required": False}}

    def get_webhook_set(self, row: EnvironmentMonitoring) -> bool:
        return bool(row.webhook_url)


# --- Views ------------------------------------------------------------------------------------


def _check(request: Any, pk: int, kind: str | None = None, minimum: str = "viewer") -> tuple:
    queryset = Check.objects.select_related("project", "environment", "service")
    if kind is not None:
        queryset = queryset.filter(kind=kind, parent__isnull=True)
    return object_for(request.user, queryset, minimum=minimum, pk=pk)


class ProjectCheckList(generics.ListCreateAPIView):
    """Checks of a project (top-level; suites are under /suites/)."""

    serializer_class = CheckSerializer

    def get_queryset(self):  # noqa: ANN201
        project, _ = project_for(self.request.user, self.kwargs["slug"])
        checks = Check.objects.filter(
            project=project, kind=Check.Kind.CHECK, parent__isnull=True
        ).select_related("environment", "service")
        environment = self.request.query_params.get("environment")
        if environment:
            checks = checks.filter(environment__name=environment)
        return checks.order_by("environment__order", "name")

    @extend_schema(
        parameters=[OpenApiParameter("environment", str, description="Only this environment")]
    )
    def get(self, request, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        return super().get(request, *args, **kwargs)

    @extend_schema(request=CheckSerializer, responses={201: CheckSerializer})
    def post(self, request, slug: str):  # noqa: ANN001, ANN201
        project, membership = project_for(request.user, slug, Membership.Role.ENGINEER)
        serializer = CheckSerializer(data=request.data, project=project)
        serializer.is_valid(raise_exception=True)
        check = services.create_check(request.user, membership, **serializer.service_arguments())
        return Response(
            CheckSerializer(check, context={"request": request}).data,
            status=status.HTTP_201_CREATED,
        )


class CheckDetail(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = CheckSerializer
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_object(self):  # noqa: ANN201
        return _check(self.request, self.kwargs["pk"])[0]

    @extend_schema(request=CheckSerializer, responses={200: CheckSerializer})
    def patch(self, request, pk: int):  # noqa: ANN001, ANN201
        check, membership = _check(request, pk, minimum=Membership.Role.ENGINEER)
        serializer = CheckSerializer(check, data=request.data, partial=True, project=check.project)
        serializer.is_valid(raise_exception=True)
        data = serializer.service_arguments()
        data.pop("environment", None)
        if "service" not in request.data:
            data.pop("service")
        check = services.update_check(request.user, membership, check, **data)
        return Response(CheckSerializer(check, context={"request": request}).data)

    def delete(self, request, pk: int):  # noqa: ANN001, ANN201
        check, membership = _check(request, pk, minimum=Membership.Role.ENGINEER)
        services.delete_check(request.user, membership, check)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RunCheck(APIView):
    """Run a check or suite now and answer with its result (blocking, bounded by its timeouts)."""

    kind: str | None = None

    @extend_schema(request=None, responses={200: CheckRunSerializer})
    def post(self, request, pk: int):  # noqa: ANN001, ANN201
        check, membership = _check(request, pk, kind=self.kind, minimum=Membership.Role.ENGINEER)
        if check.is_step:
            return Response(
                {"detail": "Run the suite this step belongs to."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        [outcome] = services.run_units(
            services.load_checks([check.pk]), trigger=CheckResult.Trigger.API, actor=request.user
        )
        return Response(CheckRunSerializer(outcome.as_dict()).data)


class RunSuite(RunCheck):
    kind = Check.Kind.SUITE


class CheckResults(generics.ListAPIView):
    """Stored results of a check or suite, newest first, paginated (limit/offset)."""

    serializer_class = CheckResultSerializer
    kind: str | None = None

    def get_queryset(self):  # noqa: ANN201
        check, _ = _check(self.request, self.kwargs["pk"], kind=self.kind)
        results = CheckResult.objects.filter(health_check=check).order_by("-started_at", "-id")
        if self.request.query_params.get("failed") in ("1", "true"):
            results = results.filter(passed=False)
        return results

    @extend_schema(parameters=[OpenApiParameter("failed", OpenApiTypes.BOOL)])
    def get(self, request, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        return super().get(request, *args, **kwargs)


class SuiteResults(CheckResults):
    kind = Check.Kind.SUITE


class ProjectSuiteList(generics.ListCreateAPIView):
    serializer_class = SuiteSerializer

    def get_queryset(self):  # noqa: ANN201
        project, _ = project_for(self.request.user, self.kwargs["slug"])
        return (
            Check.objects.filter(project=project, kind=Check.Kind.SUITE)
            .select_related("environment", "service")
            .order_by("environment__order", "name")
        )

    @extend_schema(request=NewSuiteSerializer, responses={201: SuiteSerializer})
    def post(self, request, slug: str):  # noqa: ANN001, ANN201
        project, membership = project_for(request.user, slug, Membership.Role.ENGINEER)
        serializer = NewSuiteSerializer(data=request.data, project=project)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        service = data.pop("service", None)
        suite = services.create_suite(
            request.user,
            membership,
            service=service["name"] if isinstance(service, dict) else service,
            steps=[dict(step) for step in data.pop("steps")],
            **data,
        )
        return Response(SuiteSerializer(suite).data, status=status.HTTP_201_CREATED)


class SuiteDetail(generics.RetrieveDestroyAPIView):
    serializer_class = SuiteSerializer

    def get_object(self):  # noqa: ANN201
        return _check(self.request, self.kwargs["pk"], kind=Check.Kind.SUITE)[0]

    def delete(self, request, pk: int):  # noqa: ANN001, ANN201
        suite, membership = _check(request, pk, kind=Check.Kind.SUITE, minimum="engineer")
        services.delete_check(request.user, membership, suite)
        return Response(status=status.HTTP_204_NO_CONTENT)


class EnvironmentMonitoringDetail(APIView):
    """What an environment's checks may reach, and whom they notify."""

    def _environment(self, request: Any, slug: str, name: str) -> tuple:
        project, membership = project_for(request.user, slug)
        environment = Environment.objects.filter(project=project, name=name).first()
        if environment is None:
            from django.http import Http404

            raise Http404
        return environment, membership

    @extend_schema(responses={200: EnvironmentMonitoringSerializer})
    def get(self, request, slug: str, name: str):  # noqa: ANN001, ANN201
        environment, _ = self._environment(request, slug, name)
        row = services.monitoring_for(environment)
        return Response(EnvironmentMonitoringSerializer(row).data)

    @extend_schema(
        request=EnvironmentMonitoringSerializer, responses={200: EnvironmentMonitoringSerializer}
    )
    def patch(self, request, slug: str, name: str):  # noqa: ANN001, ANN201
        environment, membership = self._environment(request, slug, name)
        serializer = EnvironmentMonitoringSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        changes: dict[str, Any] = {}
        if "allow_entries" in data:
            changes["allow_list"] = "\n".join(data["allow_entries"])
        if "emails" in data:
            changes["contact_emails"] = "\n".join(data["emails"])
        for key in ("allow_public", "webhook_url", "proxy_url", "client_certificate", "client_key"):
            if key in data:
                changes[key] = data[key]
        row = services.update_environment_monitoring(
            request.user, membership, environment, **changes
        )
        return Response(EnvironmentMonitoringSerializer(row).data)
