"""REST API for incidents. Thin: serializers check shapes, services act, the same 404 for
another project's incident as for one that does not exist."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from releasecenter.access import object_for, project_for
from releasecenter.models import Membership
from releasecenter.validation import ascii_int

from . import postmortems, selectors, services, timeline
from .models import SEVERITIES, Incident, TimelineEntry

SEVERITY_HELP = '"P0" (worst) to "P4".'
STATUS_HELP = '"investigating", "identified", "monitoring", "resolved" or "closed".'


class SubjectSerializer(serializers.Serializer):
    type = serializers.CharField()
    id = serializers.CharField()
    url = serializers.CharField(allow_blank=True)


class SlaSerializer(serializers.Serializer):
    acknowledge_by = serializers.DateTimeField(allow_null=True)
    next_update_by = serializers.DateTimeField(allow_null=True)
    breached = serializers.BooleanField()


class ServiceChangeSerializer(serializers.Serializer):
    service = serializers.CharField()
    before = serializers.CharField()
    after = serializers.CharField()


class SuspectSerializer(serializers.Serializer):
    id = serializers.CharField(help_text='e.g. "deployment:12"; POST it to rollback/.')
    title = serializers.CharField()
    url = serializers.CharField()
    environment = serializers.CharField()
    version = serializers.CharField()
    status = serializers.CharField()
    at = serializers.DateTimeField()
    changes = ServiceChangeSerializer(many=True)
    rolled_back = serializers.BooleanField()
    can_roll_back = serializers.BooleanField()
    rollback_blocked_reason = serializers.CharField(allow_blank=True)


class IncidentSerializer(serializers.ModelSerializer):
    reference = serializers.CharField(read_only=True, help_text="INC-<number>, per project.")
    # Plain strings rather than enums: other apps' "severity" fields would collide in the schema.
    severity = serializers.CharField(read_only=True, help_text=SEVERITY_HELP)
    status = serializers.CharField(read_only=True, help_text=STATUS_HELP)
    allowed_statuses = serializers.ListField(
        child=serializers.CharField(), source="allowed_moves", read_only=True
    )
    environments = serializers.SerializerMethodField()
    services = serializers.SerializerMethodField()
    commander = serializers.CharField(source="commander.username", default=None, read_only=True)
    participants = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    sla = serializers.SerializerMethodField()

    class Meta:
        model = Incident
        fields = [
            "id",
            "reference",
            "title",
            "summary",
            "severity",
            "status",
            "allowed_statuses",
            "environments",
            "services",
            "commander",
            "participants",
            "started_at",
            "acknowledged_at",
            "resolved_at",
            "closed_at",
            "version",
            "url",
            "sla",
        ]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_environments(self, obj: Incident) -> list[str]:
        return [e.name for e in obj.environments.all()]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_services(self, obj: Incident) -> list[str]:
        return [s.name for s in obj.services.all()]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_participants(self, obj: Incident) -> list[str]:
        return [u.username for u in obj.participants.all()]

    def get_url(self, obj: Incident) -> str:
        return services.incident_url(obj)

    @extend_schema_field(SlaSerializer)
    def get_sla(self, obj: Incident) -> dict[str, Any]:
        return SlaSerializer(selectors.sla(obj)).data


class IncidentDetailSerializer(IncidentSerializer):
    suspect_deployments = serializers.SerializerMethodField()

    class Meta(IncidentSerializer.Meta):
        fields = [*IncidentSerializer.Meta.fields, "suspect_deployments"]

    @extend_schema_field(SuspectSerializer(many=True))
    def get_suspect_deployments(self, obj: Incident) -> list[dict[str, Any]]:
        return SuspectSerializer(selectors.suspects(obj), many=True).data


class NewIncidentSerializer(serializers.Serializer):
    # Lengths, NUL bytes and names are the service's to check, so the messages are the same
    # for the page and the API.
    title = serializers.CharField(allow_blank=True, trim_whitespace=False)
    severity = serializers.CharField(help_text=SEVERITY_HELP)
    environments = serializers.ListField(child=serializers.CharField(), allow_empty=True)
    services = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    summary = serializers.CharField(required=False, allow_blank=True, default="")
    started_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    commander = serializers.CharField(required=False, allow_null=True, default=None)


class IncidentChangeSerializer(serializers.Serializer):
    version = serializers.IntegerField(
        required=False,
        help_text="The version you read; a stale one is a 409 with the current state.",
    )
    title = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    summary = serializers.CharField(required=False, allow_blank=True)
    severity = serializers.CharField(required=False, help_text=SEVERITY_HELP)
    started_at = serializers.DateTimeField(required=False)
    commander = serializers.CharField(required=False, allow_null=True)
    environments = serializers.ListField(child=serializers.CharField(), required=False)
    services = serializers.ListField(child=serializers.CharField(), required=False)


class VersionSerializer(serializers.Serializer):
    version = serializers.IntegerField(required=False)


class StatusChangeSerializer(serializers.Serializer):
    status = serializers.CharField(help_text=STATUS_HELP)
    message = serializers.CharField(
        allow_blank=True, help_text="Why: it is posted to the timeline."
    )
    version = serializers.IntegerField(required=False)


class TimelineItemSerializer(serializers.Serializer):
    occurred_at = serializers.DateTimeField()
    kind = serializers.CharField()
    source = serializers.CharField(help_text='"person" or "system".')
    text = serializers.CharField()
    subject = SubjectSerializer(allow_null=True)
    author = serializers.CharField(allow_null=True)
    entry_id = serializers.IntegerField(allow_null=True)
    edited = serializers.BooleanField()


class NewEntrySerializer(serializers.Serializer):
    kind = serializers.CharField(
        help_text=", ".join(f'"{k}"' for k in TimelineEntry.PERSON_KINDS) + "."
    )
    text = serializers.CharField(allow_blank=True)
    occurred_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class SuspectRollbackSerializer(serializers.Serializer):
    suspect = serializers.CharField(help_text='A suspect\'s id, e.g. "deployment:12".')
    reason = serializers.CharField(required=False, allow_blank=True, default="")


# --- Views ------------------------------------------------------------------------------------


def _queryset():  # noqa: ANN202
    return Incident.objects.select_related("project", "commander").prefetch_related(
        "environments", "services", "participants"
    )


def _incident(request: Any, pk: int, minimum: str = Membership.Role.VIEWER) -> tuple:
    return object_for(request.user, _queryset(), minimum=minimum, pk=pk)


def _conflict(exc: services.StaleVersion) -> Response:
    current = _queryset().get(pk=exc.incident.pk)
    return Response(
        {"detail": str(exc), "current": IncidentSerializer(current).data},
        status=status.HTTP_409_CONFLICT,
    )


def _detail(incident: Incident, code: int = status.HTTP_200_OK) -> Response:
    return Response(IncidentDetailSerializer(_queryset().get(pk=incident.pk)).data, status=code)


class ProjectIncidentList(generics.ListCreateAPIView):
    serializer_class = IncidentSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, description=STATUS_HELP + ' Or "open".'),
            OpenApiParameter("severity", str, description="P0 … P4"),
            OpenApiParameter("environment", str, description="An environment name."),
        ]
    )
    def get(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):  # noqa: ANN201
        project, _ = project_for(self.request.user, self.kwargs["slug"])
        rows = _queryset().filter(project=project)
        params = self.request.query_params
        wanted = params.get("status")
        if wanted:
            if wanted == "open":
                rows = rows.open()
            elif wanted in Incident.Status.values:
                rows = rows.filter(status=wanted)
            else:
                raise ValidationError(
                    {"status": f"Use one of {', '.join(Incident.Status.values)} or open."}
                )
        severity = params.get("severity")
        if severity:
            if severity not in SEVERITIES:
                raise ValidationError({"severity": f"Use one of {', '.join(SEVERITIES)}."})
            rows = rows.filter(severity=severity)
        environment = params.get("environment")
        if environment:
            rows = rows.filter(environments__name=environment)
        return rows.order_by("-started_at", "-id")

    @extend_schema(request=NewIncidentSerializer, responses={201: IncidentDetailSerializer})
    def post(self, request: Any, slug: str) -> Response:
        _, membership = project_for(request.user, slug)
        serializer = NewIncidentSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        incident = services.open_incident(request.user, membership, **serializer.validated_data)
        return _detail(incident, status.HTTP_201_CREATED)


class IncidentDetail(APIView):
    @extend_schema(responses={200: IncidentDetailSerializer})
    def get(self, request: Any, pk: int) -> Response:
        incident, _ = _incident(request, pk)
        return Response(IncidentDetailSerializer(incident).data)

    @extend_schema(
        request=IncidentChangeSerializer,
        responses={200: IncidentDetailSerializer, 409: OpenApiTypes.OBJECT},
    )
    def patch(self, request: Any, pk: int) -> Response:
        incident, membership = _incident(request, pk)
        serializer = IncidentChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        version = data.pop("version", None)
        try:
            incident = services.update_incident(
                request.user, membership, incident, version=version, **data
            )
        except services.StaleVersion as exc:
            return _conflict(exc)
        return _detail(incident)


class AcknowledgeIncident(APIView):
    @extend_schema(request=VersionSerializer, responses={200: IncidentDetailSerializer})
    def post(self, request: Any, pk: int) -> Response:
        incident, membership = _incident(request, pk)
        serializer = VersionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            incident = services.acknowledge_incident(
                request.user, membership, incident, **serializer.validated_data
            )
        except services.StaleVersion as exc:
            return _conflict(exc)
        return _detail(incident)


class ChangeIncidentStatus(APIView):
    @extend_schema(
        request=StatusChangeSerializer,
        responses={200: IncidentDetailSerializer, 409: OpenApiTypes.OBJECT},
    )
    def post(self, request: Any, pk: int) -> Response:
        incident, membership = _incident(request, pk)
        serializer = StatusChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            incident = services.change_status(
                request.user,
                membership,
                incident,
                data["status"],
                data["message"],
                version=data.get("version"),
            )
        except services.StaleVersion as exc:
            return _conflict(exc)
        return _detail(incident)


class IncidentTimeline(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("kind", str, many=True, description="Only these kinds."),
            OpenApiParameter("before", OpenApiTypes.DATETIME, description="Older than this."),
            OpenApiParameter(
                "limit", int, description="At most this many (default 200, max 1000)."
            ),
        ],
        responses={200: TimelineItemSerializer(many=True)},
    )
    def get(self, request: Any, pk: int) -> Response:
        incident, _ = _incident(request, pk)
        kinds = set(request.query_params.getlist("kind")) or None
        if kinds and not kinds <= set(timeline.FILTER_KINDS):
            raise ValidationError({"kind": f"Use any of {', '.join(timeline.FILTER_KINDS)}."})
        before = None
        if request.query_params.get("before"):
            before = serializers.DateTimeField().to_internal_value(request.query_params["before"])
        limit = ascii_int(request.query_params.get("limit", "200"))
        if limit is None or not 1 <= limit <= 1000:
            raise ValidationError({"limit": "Give a number from 1 to 1000."})
        items, more = timeline.merged(incident, before=before, kinds=kinds, limit=limit)
        response = Response(TimelineItemSerializer([i.as_dict() for i in items], many=True).data)
        if more and items:
            response["X-Older-Before"] = items[0].occurred_at.isoformat()
        return response

    @extend_schema(request=NewEntrySerializer, responses={201: TimelineItemSerializer})
    def post(self, request: Any, pk: int) -> Response:
        incident, membership = _incident(request, pk)
        serializer = NewEntrySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        entry = services.add_timeline_entry(
            request.user, membership, incident, **serializer.validated_data
        )
        item = timeline._entry_item(entry)  # noqa: SLF001 - the same shape the list uses
        return Response(TimelineItemSerializer(item.as_dict()).data, status=status.HTTP_201_CREATED)


class IncidentRollback(APIView):
    @extend_schema(request=SuspectRollbackSerializer, responses={202: OpenApiTypes.OBJECT})
    def post(self, request: Any, pk: int) -> Response:
        incident, membership = _incident(request, pk)
        serializer = SuspectRollbackSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        url = services.roll_back_suspect(
            request.user, membership, incident, **serializer.validated_data
        )
        return Response({"rollback_url": url}, status=status.HTTP_202_ACCEPTED)


class IncidentPostmortem(APIView):
    @extend_schema(responses={(200, "text/markdown"): OpenApiTypes.STR})
    def get(self, request: Any, pk: int) -> HttpResponse:
        incident, _ = _incident(request, pk)
        text = postmortems.as_markdown(incident)
        if text is None:
            raise Http404("No postmortem yet: it is prefilled when the incident is resolved.")
        return HttpResponse(text, content_type="text/markdown; charset=utf-8")
