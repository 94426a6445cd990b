"""REST API of on-call: schedules, who is on call, notification channels. Thin: serializers
check shapes, services validate and write. Outsiders get 404 (releasecenter.access)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from releasecenter.access import project_for
from releasecenter.models import Membership

from ..incidents import services as incident_services
from . import channels, escalation, schedules
from .models import NotificationChannel, Schedule

# --- Schedules ---------------------------------------------------------------------------------


class ScheduleSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=80)
    time_zone = serializers.CharField(max_length=64, help_text="IANA name, e.g. Europe/Berlin.")
    rotation = serializers.CharField(help_text='"daily" or "weekly".')
    handoff = serializers.CharField(help_text='Local time of the handoff, e.g. "09:00".')
    handoff_weekday = serializers.IntegerField(
        required=False, default=0, help_text="Weekly rotations: 0 (Monday) to 6 (Sunday)."
    )
    members = serializers.ListField(child=serializers.CharField(), help_text="Usernames, in order.")

    def to_representation(self, schedule: Schedule) -> dict[str, Any]:
        return {
            "id": schedule.pk,
            "name": schedule.name,
            "time_zone": schedule.time_zone,
            "rotation": schedule.rotation,
            "handoff": schedule.handoff.strftime("%H:%M"),
            "handoff_weekday": schedule.handoff_weekday,
            "members": [m.user.username for m in schedule.members.all()],
        }


class ScheduleList(APIView):
    @extend_schema(responses={200: ScheduleSerializer(many=True)})
    def get(self, request, slug: str):  # noqa: ANN001, ANN201
        project, _ = project_for(request.user, slug)
        rows = Schedule.objects.filter(project=project).prefetch_related("members__user")
        return Response(ScheduleSerializer(rows, many=True).data)

    @extend_schema(request=ScheduleSerializer, responses={201: ScheduleSerializer})
    def post(self, request, slug: str):  # noqa: ANN001, ANN201
        _project, membership = project_for(request.user, slug, Membership.Role.LEAD)
        serializer = ScheduleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        schedule = schedules.create_schedule(request.user, membership, **serializer.validated_data)
        return Response(ScheduleSerializer(schedule).data, status=status.HTTP_201_CREATED)


OnCallSerializer = inline_serializer(
    "OnCall",
    {
        "schedules": serializers.ListField(
            child=inline_serializer(
                "OnCallEntry",
                {
                    "name": serializers.CharField(),
                    "on_call": serializers.CharField(allow_null=True),
                    "until": serializers.DateTimeField(allow_null=True),
                    "override": serializers.BooleanField(),
                },
            )
        )
    },
)


class OnCallNow(APIView):
    @extend_schema(responses={200: OnCallSerializer})
    def get(self, request, slug: str):  # noqa: ANN001, ANN201
        project, _ = project_for(request.user, slug)
        return Response(
            {
                "schedules": [
                    {
                        "name": entry.schedule.name,
                        "on_call": entry.user.username if entry.user else None,
                        "until": entry.until.isoformat() if entry.until else None,
                        "override": entry.override,
                    }
                    for entry in schedules.project_on_call(project)
                ]
            }
        )


# --- Channels ----------------------------------------------------------------------------------


class ChannelSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=80)
    kind = serializers.CharField(help_text='"webhook", "slack" or "email".')
    url = serializers.CharField(
        required=False, allow_blank=True, write_only=True, help_text="Never shown back."
    )
    secret = serializers.CharField(
        required=False,
        allow_blank=True,
        write_only=True,
        help_text="Webhook signing secret; generated and shown once when omitted.",
    )
    emails = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    address_environment = serializers.CharField(
        required=False,
        allow_null=True,
        default=None,
        help_text="The environment whose address allow-list the URL may use.",
    )
    url_set = serializers.BooleanField(read_only=True)
    health = serializers.CharField(read_only=True, help_text='"unknown", "ok" or "failing".')
    last_error = serializers.CharField(read_only=True)

    def to_representation(self, channel: NotificationChannel) -> dict[str, Any]:
        return {
            "id": channel.pk,
            "name": channel.name,
            "kind": channel.kind,
            "emails": channel.email_list(),
            "address_environment": channel.address_environment.name
            if channel.address_environment_id
            else None,
            "url_set": bool(channel.url),
            "health": channel.health,
            "last_error": channel.last_error,
        }


class ChannelList(APIView):
    @extend_schema(responses={200: ChannelSerializer(many=True)})
    def get(self, request, slug: str):  # noqa: ANN001, ANN201
        project, _ = project_for(request.user, slug)
        rows = NotificationChannel.objects.filter(project=project).select_related(
            "address_environment"
        )
        return Response(ChannelSerializer(rows, many=True).data)

    @extend_schema(request=ChannelSerializer, responses={201: ChannelSerializer})
    def post(self, request, slug: str):  # noqa: ANN001, ANN201
        _project, membership = project_for(request.user, slug, Membership.Role.LEAD)
        serializer = ChannelSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        channel, generated = channels.create_channel(
            request.user, membership, **serializer.validated_data
        )
        body = ChannelSerializer(channel).data
        if generated:
            # The one time it is shown: the receiver needs it to check signatures.
            body["generated_secret"] = generated
        return Response(body, status=status.HTTP_201_CREATED)


# --- Escalation policy -------------------------------------------------------------------------

LevelSerializer = inline_serializer(
    "EscalationLevel",
    {
        "schedule": serializers.CharField(
            allow_null=True, required=False, help_text="Page this schedule's on-call."
        ),
        "members": serializers.ListField(
            child=serializers.CharField(), required=False, help_text="Page these usernames."
        ),
        "wait_minutes": serializers.IntegerField(
            help_text="Before the next level (which also waits for the acknowledge SLA)."
        ),
    },
)
PolicySerializer = inline_serializer(
    "EscalationPolicy",
    {
        "policy": serializers.DictField(
            child=serializers.ListField(child=LevelSerializer),
            help_text='Severity ("P0".."P4") to its ordered levels; a severity left out has none.',
        )
    },
)


class EscalationPolicyDetail(APIView):
    @extend_schema(responses={200: PolicySerializer})
    def get(self, request, slug: str):  # noqa: ANN001, ANN201
        project, _ = project_for(request.user, slug)
        return Response({"policy": escalation.policy(project)})

    @extend_schema(request=PolicySerializer, responses={200: PolicySerializer})
    def put(self, request, slug: str):  # noqa: ANN001, ANN201
        _project, membership = project_for(request.user, slug, Membership.Role.LEAD)
        body = request.data if isinstance(request.data, dict) else {}
        if "policy" not in body:
            return Response(
                {"policy": ['Send {"policy": {"P1": [levels], ...}}.']},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response({"policy": escalation.set_policy(request.user, membership, body["policy"])})


# --- Severity policy (the incidents' SLA clocks, in seconds) ---------------------------------------

SeverityRuleSerializer = inline_serializer(
    "SeverityRule",
    {
        "acknowledge_seconds": serializers.IntegerField(
            allow_null=True, help_text="0: at once; null: by the next working day."
        ),
        "update_seconds": serializers.IntegerField(
            allow_null=True, help_text="How often a stakeholder update is due while open."
        ),
    },
)
SeverityPolicySerializer = inline_serializer(
    "SeverityPolicy",
    {"policy": serializers.DictField(child=SeverityRuleSerializer, help_text="P0..P4")},
)


class SeverityPolicyDetail(APIView):
    """The acknowledge and update SLAs per severity, in whole seconds (null: by the next
    working day). A bad value is a 400 naming the field, and nothing is changed."""

    @extend_schema(responses={200: SeverityPolicySerializer})
    def get(self, request, slug: str):  # noqa: ANN001, ANN201
        project, _ = project_for(request.user, slug)
        return Response({"policy": _severity_policy(project)})

    @extend_schema(request=SeverityPolicySerializer, responses={200: SeverityPolicySerializer})
    def put(self, request, slug: str):  # noqa: ANN001, ANN201
        project, membership = project_for(request.user, slug, Membership.Role.ADMIN)
        body = request.data if isinstance(request.data, dict) else {}
        policy = body.get("policy")
        if not isinstance(policy, dict) or not policy:
            raise ValidationError(
                {
                    "policy": 'Send {"policy": {"P1": {"acknowledge_seconds": 900, '
                    '"update_seconds": 1800}, ...}}.'
                }
            )
        current = _severity_policy(project)
        changes = []
        for severity, rule in policy.items():
            if severity not in current:
                raise ValidationError({"policy": f"Unknown severity {severity!r}; use P0 to P4."})
            if not isinstance(rule, dict):
                raise ValidationError({f"policy.{severity}": "An object of seconds."})
            seconds = {}
            for key in ("acknowledge_seconds", "update_seconds"):
                value = rule.get(key, current[severity][key])
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise ValidationError({f"policy.{severity}.{key}": "Whole seconds, or null."})
                seconds[key] = value
            changes.append((severity, seconds))
        with transaction.atomic():
            for severity, seconds in changes:
                try:
                    incident_services.set_severity_policy(
                        request.user, membership, severity, **seconds
                    )
                except ValidationError as exc:
                    raise ValidationError(
                        {f"policy.{severity}.{k}": v for k, v in exc.message_dict.items()}
                    ) from exc
        return Response({"policy": _severity_policy(project)})


def _severity_policy(project: Any) -> dict[str, dict[str, int | None]]:
    return {
        severity: {
            "acknowledge_seconds": rule.acknowledge_seconds,
            "update_seconds": rule.update_seconds,
        }
        for severity, rule in incident_services.rules_for(project).items()
    }


# --- Overrides ---------------------------------------------------------------------------------


class OverrideSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    user = serializers.CharField(help_text="Username of the member who covers.")
    starts_at = serializers.DateTimeField(help_text="With its offset, e.g. 2026-03-24T18:00+01:00")
    ends_at = serializers.DateTimeField()
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)

    def to_representation(self, override: Any) -> dict[str, Any]:
        return {
            "id": override.pk,
            "user": override.user.username,
            "starts_at": override.starts_at.isoformat(),
            "ends_at": override.ends_at.isoformat(),
            "reason": override.reason,
        }


class OverrideList(APIView):
    """Overrides of a schedule that have not ended; POST adds one (overlaps are refused)."""

    def _schedule(self, project: Any, pk: int) -> Schedule:
        schedule = Schedule.objects.filter(project=project, pk=pk).first()
        if schedule is None:
            raise Http404("No such schedule.")
        return schedule

    @extend_schema(responses={200: OverrideSerializer(many=True)})
    def get(self, request, slug: str, pk: int):  # noqa: ANN001, ANN201
        project, _ = project_for(request.user, slug)
        schedule = self._schedule(project, pk)
        rows = schedule.overrides.filter(ends_at__gt=timezone.now()).select_related("user")
        return Response(OverrideSerializer(rows, many=True).data)

    @extend_schema(request=OverrideSerializer, responses={201: OverrideSerializer})
    def post(self, request, slug: str, pk: int):  # noqa: ANN001, ANN201
        project, membership = project_for(request.user, slug, Membership.Role.ENGINEER)
        schedule = self._schedule(project, pk)
        serializer = OverrideSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        override = schedules.add_override(
            request.user,
            membership,
            schedule,
            username=data["user"],
            starts_at=data["starts_at"],
            ends_at=data["ends_at"],
            reason=data["reason"],
        )
        return Response(OverrideSerializer(override).data, status=status.HTTP_201_CREATED)
