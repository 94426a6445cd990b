"""REST API for releases, sign-offs and the go/no-go decision. Thin: services do the work."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from releasecenter.access import object_for, project_for

from . import services
from .decision import decide
from .models import Release, ReleaseTarget, Signoff


class TargetSerializer(serializers.ModelSerializer):
    environment = serializers.CharField(source="environment.name")

    class Meta:
        model = ReleaseTarget
        fields = [
            "environment",
            "status",
            "status_changed_at",
            "approved_at",
            "deployed_at",
            "verified_at",
        ]


class ReleaseSerializer(serializers.ModelSerializer):
    targets = TargetSerializer(many=True, read_only=True)
    project = serializers.CharField(source="project.slug", read_only=True)
    environments = serializers.ListField(
        child=serializers.CharField(),
        write_only=True,
        required=False,
        help_text="Target environments by name; all of the project's by default.",
    )
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)

    class Meta:
        model = Release
        fields = [
            "id",
            "project",
            "version",
            "commit_sha",
            "notes",
            "planned_start",
            "revision",
            "created_by",
            "created_at",
            "targets",
            "environments",
        ]
        read_only_fields = ["id", "project", "revision", "created_by", "created_at", "targets"]
        # Shape checks only; the service validates and answers a taken version with 409.
        extra_kwargs = {"version": {"validators": []}, "commit_sha": {"validators": []}}


class SignoffSerializer(serializers.ModelSerializer):
    environment = serializers.CharField(source="target.environment.name")
    user = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Signoff
        fields = [
            "id",
            "environment",
            "role",
            "decision",
            "comment",
            "user",
            "created_at",
            "stale_at",
            "stale_reason",
            "withdrawn_at",
        ]
        read_only_fields = ["id", "user", "created_at", "stale_at", "stale_reason", "withdrawn_at"]


DecisionSerializer = inline_serializer(
    name="Decision",
    fields={
        "decision": serializers.ChoiceField(choices=["go", "no-go"]),
        "environment": serializers.CharField(),
        "reasons": inline_serializer(
            name="DecisionReason",
            fields={
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "link": serializers.CharField(),
            },
            many=True,
        ),
    },
)


def _release_queryset():  # noqa: ANN202
    return Release.objects.select_related("project", "created_by").prefetch_related(
        "targets__environment"
    )


class ReleaseList(generics.ListCreateAPIView):
    serializer_class = ReleaseSerializer

    def membership(self):  # noqa: ANN201
        return project_for(self.request.user, self.kwargs["slug"])[1]

    def get_queryset(self):  # noqa: ANN201
        queryset = _release_queryset().filter(project=self.membership().project)
        environment = self.request.query_params.get("environment")
        status_ = self.request.query_params.get("status")
        if environment:
            queryset = queryset.filter(targets__environment__name=environment)
        if status_:
            queryset = queryset.filter(targets__status=status_)
        return queryset.distinct()

    @extend_schema(
        parameters=[
            OpenApiParameter("environment", str, description="Only releases targeting it."),
            OpenApiParameter("status", str, description="Only releases with a target in it."),
        ]
    )
    def get(self, request, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        return super().get(request, *args, **kwargs)

    def perform_create(self, serializer):  # noqa: ANN001, ANN201
        data = dict(serializer.validated_data)
        release = services.create_release(self.request.user, self.membership(), **data)
        serializer.instance = _release_queryset().get(pk=release.pk)


class ReleaseDetail(generics.RetrieveAPIView):
    serializer_class = ReleaseSerializer

    def get_object(self):  # noqa: ANN201
        return object_for(self.request.user, _release_queryset(), pk=self.kwargs["pk"])[0]


class SignoffList(APIView):
    serializer_class = SignoffSerializer

    @extend_schema(responses=SignoffSerializer(many=True))
    def get(self, request, pk: int):  # noqa: ANN001, ANN201
        release, _m = object_for(request.user, Release.objects.all(), pk=pk)
        rows = Signoff.objects.filter(target__release=release).select_related(
            "user", "target__environment"
        )
        return Response(SignoffSerializer(rows, many=True).data)

    @extend_schema(
        request=inline_serializer(
            name="SignoffRequest",
            fields={
                "environment": serializers.CharField(),
                "role": serializers.CharField(),
                "decision": serializers.ChoiceField(choices=["approve", "reject"]),
                "comment": serializers.CharField(required=False, allow_blank=True),
            },
        ),
        responses={201: SignoffSerializer},
        description="403 without the sign-off capacity; 409 when the same person already "
        "fills another role on this release in this environment.",
    )
    def post(self, request, pk: int):  # noqa: ANN001, ANN201
        release, membership = object_for(request.user, Release.objects.all(), pk=pk)
        data = request.data
        missing = [f for f in ("environment", "role", "decision") if not data.get(f)]
        if missing:
            return Response(
                {f: "This field is required." for f in missing}, status=status.HTTP_400_BAD_REQUEST
            )
        signoff = services.sign_off(
            request.user,
            membership,
            release,
            environment=str(data["environment"]),
            role=str(data["role"]),
            decision=str(data["decision"]),
            comment=str(data.get("comment") or ""),
        )
        signoff = Signoff.objects.select_related("user", "target__environment").get(pk=signoff.pk)
        return Response(SignoffSerializer(signoff).data, status=status.HTTP_201_CREATED)


class DecisionView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("environment", OpenApiTypes.STR, required=True)],
        responses={200: DecisionSerializer},
        description='"May I deploy?": go or no-go with every reason it is no.',
    )
    def get(self, request, pk: int):  # noqa: ANN001, ANN201
        release, _m = object_for(request.user, Release.objects.select_related("project"), pk=pk)
        name = request.query_params.get("environment")
        if not name:
            return Response(
                {"environment": "Name the environment: ?environment=NAME"},
                status=status.HTTP_400_BAD_REQUEST,
            )
        target = (
            release.targets.select_related("environment").filter(environment__name=name).first()
        )
        if target is None:
            raise Http404
        body = decide(release, target.environment).as_dict()
        body["environment"] = name
        return Response(body)
