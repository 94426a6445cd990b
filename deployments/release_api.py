"""REST API for releases, sign-offs and the go/no-go decision. Thin: services do the work."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from releasecenter.access import object_for, project_for
from releasecenter.api_fields import MomentField
from releasecenter.models import AuditEvent

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
            "deployed_commit",
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
    planned_start = MomentField(required=False, allow_null=True)

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
        "requester": serializers.CharField(
            allow_null=True,
            help_text="Whose request the decision was made for (?requester=me), or null.",
        ),
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
        if not hasattr(self, "_membership"):
            self._membership = project_for(self.request.user, self.kwargs["slug"])[1]
        return self._membership

    def get_queryset(self):  # noqa: ANN201
        queryset = _release_queryset().filter(project=self.membership().project)
        environment = self.request.query_params.get("environment")
        status_ = self.request.query_params.get("status")
        if status_ and status_ not in ReleaseTarget.Status.values:
            raise serializers.ValidationError(
                {
                    "status": f"Unknown status '{status_[:40]}'; use one of "
                    + ", ".join(ReleaseTarget.Status.values)
                    + "."
                }
            )
        # One filter() call, so environment and status must hold for the same target.
        lookup = {}
        if environment:
            lookup["targets__environment__name"] = environment
        if status_:
            lookup["targets__status"] = status_
        return queryset.filter(**lookup).distinct()

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "environment",
                str,
                description="Only releases targeting it (with status: in that status there).",
            ),
            OpenApiParameter(
                "status",
                str,
                enum=ReleaseTarget.Status.values,
                description="Only releases with a target in it; another value is a 400.",
            ),
        ]
    )
    def get(self, request, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        services.expire_lapsed_approvals(project=self.membership().project)
        return super().get(request, *args, **kwargs)

    def perform_create(self, serializer):  # noqa: ANN001, ANN201
        data = dict(serializer.validated_data)
        release = services.create_release(self.request.user, self.membership(), **data)
        serializer.instance = _release_queryset().get(pk=release.pk)


class ReleaseUpdateSerializer(serializers.Serializer):
    commit_sha = serializers.CharField(max_length=64, required=False)
    notes = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    expected_revision = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="The revision you read; another one is a 409 and nothing changes.",
    )

    def to_internal_value(self, data):  # noqa: ANN001, ANN201
        if not isinstance(data, dict):
            raise serializers.ValidationError({"detail": "Send a JSON object."})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {
                    name: "Unknown field; a release's commit_sha and notes can change."
                    for name in unknown
                }
            )
        return super().to_internal_value(data)


class CommitResetSerializer(serializers.Serializer):
    environment = serializers.CharField()
    old_commit = serializers.CharField()
    new_commit = serializers.CharField()
    status_before = serializers.CharField()
    summary = serializers.CharField()
    reopened = serializers.ListField(child=serializers.CharField())
    acknowledgements = serializers.ListField(child=serializers.CharField())
    acceptances = serializers.ListField(child=serializers.CharField())


class ReleaseDetail(generics.RetrieveAPIView):
    serializer_class = ReleaseSerializer

    def get_object(self):  # noqa: ANN201
        release = object_for(self.request.user, _release_queryset(), pk=self.kwargs["pk"])[0]
        if services.expire_lapsed_approvals(release=release):
            release = _release_queryset().get(pk=release.pk)
        return release

    @extend_schema(
        request=ReleaseUpdateSerializer,
        responses={
            200: inline_serializer(
                "ReleaseUpdated",
                {"release": ReleaseSerializer(), "reset": CommitResetSerializer(many=True)},
            ),
            400: OpenApiTypes.OBJECT,
            403: OpenApiTypes.OBJECT,
            404: OpenApiTypes.OBJECT,
            409: OpenApiTypes.OBJECT,
        },
    )
    def patch(self, request, pk: int):  # noqa: ANN001, ANN201
        """Change the commit or the notes, as CI does when it moves a release to a new build. A new
        commit has the effects of the Edit page: sign-offs go stale, deployed/verified state,
        acknowledgements and risk acceptances lapse, build-bound checklist items reopen; "reset"
        says what was reset in each environment."""
        release, membership = object_for(
            request.user, Release.objects.select_related("project"), pk=pk
        )
        body = ReleaseUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        changes = dict(body.validated_data)
        expected = changes.pop("expected_revision", None)
        commit_before = release.commit_sha
        release = services.update_release(
            request.user, membership, release, expected_revision=expected, **changes
        )
        resets = AuditEvent.objects.none()
        if release.commit_sha != commit_before:
            resets = AuditEvent.objects.filter(
                topic=release.topic, verb="release.commit_reset", data__revision=release.revision
            ).order_by("id")
        return Response(
            {
                "release": ReleaseSerializer(_release_queryset().get(pk=release.pk)).data,
                "reset": CommitResetSerializer([e.data for e in resets], many=True).data,
            }
        )


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
        if not isinstance(data, dict):
            return Response(
                {"detail": 'Send a JSON object: {"environment", "role", "decision", "comment"}.'},
                status=status.HTTP_400_BAD_REQUEST,
            )
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
        parameters=[
            OpenApiParameter("environment", OpenApiTypes.STR, required=True),
            OpenApiParameter(
                "requester",
                OpenApiTypes.STR,
                enum=["me"],
                description="requester=me: decide as for a deployment you request, the way "
                "POST .../deployments/ will. Unless the project lets the requester count "
                "towards the quorum, your own sign-off does not count then. Without it, "
                "every sign-off counts.",
            ),
        ],
        responses={200: DecisionSerializer},
        description='"May I deploy?": go or no-go with every reason it is no. Ask with '
        "?requester=me before requesting a deployment yourself, so a go is not refused later "
        "because your own sign-off does not count.",
    )
    def get(self, request, pk: int):  # noqa: ANN001, ANN201
        release, _m = object_for(request.user, Release.objects.select_related("project"), pk=pk)
        name = request.query_params.get("environment")
        if not name:
            return Response(
                {"environment": "Name the environment: ?environment=NAME"},
                status=status.HTTP_400_BAD_REQUEST,
            )
        requester = request.query_params.get("requester")
        if requester not in (None, "me"):
            return Response(
                {"requester": "Only requester=me is understood: the decision for your request."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        target = (
            release.targets.select_related("environment").filter(environment__name=name).first()
        )
        if target is None:
            raise Http404
        services.expire_lapsed_approvals(release=release)
        body = decide(
            release, target.environment, requester=request.user if requester else None
        ).as_dict()
        body["environment"] = name
        body["requester"] = request.user.username if requester else None
        return Response(body)
