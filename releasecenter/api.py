"""REST API for the core: projects, environments, services, members and tokens.

Thin by design: serializers check shapes, services do the work, access helpers decide who sees
what (an object of another project is a 404).
"""

from __future__ import annotations

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from . import services
from .access import project_for, user_projects
from .models import ApiToken, Environment, Membership, Project, Service


class ConflictError(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


def exception_handler(exc, context):  # noqa: ANN001, ANN201
    """Map domain errors onto HTTP: ValidationError → 400, Conflict → 409, outsiders → 404."""
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        return Response(detail, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, services.Conflict):
        exc = ConflictError(str(exc))
    if isinstance(exc, DjangoPermissionDenied):
        return Response({"detail": str(exc) or "Not allowed."}, status=status.HTTP_403_FORBIDDEN)
    # ObjectDoesNotExist: the row went away between the view's lookup and the service's lock (a
    # check deleted while another request changes it).
    if isinstance(exc, Http404 | ObjectDoesNotExist):
        return Response({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    return drf_exception_handler(exc, context)


# --- Serializers ------------------------------------------------------------------------------


class ProjectSerializer(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = ["slug", "name", "created_at"]
        read_only_fields = ["created_at"]
        # Uniqueness is the service's job (it answers 409, not 400).
        extra_kwargs = {"slug": {"validators": []}}


class EnvironmentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Environment
        fields = ["id", "name", "kind", "order", "protected", "base_url"]
        read_only_fields = ["id"]
        extra_kwargs = {"order": {"required": False}}


class ServiceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Service
        fields = ["id", "name", "tier", "health_path"]
        read_only_fields = ["id"]


class MemberSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")
    signoff_capacities = serializers.ListField(
        child=serializers.CharField(max_length=80), required=False
    )

    class Meta:
        model = Membership
        fields = ["id", "username", "role", "signoff_capacities"]
        read_only_fields = ["id"]


class TokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "hint", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = ["id", "hint", "created_at", "last_used_at", "revoked_at"]


class NewTokenSerializer(TokenSerializer):
    token = serializers.CharField(read_only=True, help_text="Shown once; store it now.")

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "token"]


# --- Views ------------------------------------------------------------------------------------


class ProjectList(generics.ListCreateAPIView):
    serializer_class = ProjectSerializer

    def get_queryset(self):  # noqa: ANN201
        return user_projects(self.request.user).order_by("name")

    def perform_create(self, serializer):  # noqa: ANN001, ANN201
        serializer.instance = services.create_project(
            self.request.user, **serializer.validated_data
        )


class ProjectDetail(generics.RetrieveAPIView):
    serializer_class = ProjectSerializer

    def get_object(self):  # noqa: ANN201
        return project_for(self.request.user, self.kwargs["slug"])[0]


class _ProjectScoped(generics.ListCreateAPIView):
    """A list under /projects/{slug}/ whose create is a service call by a project member."""

    model: type
    create_service = None

    def membership(self):  # noqa: ANN201
        return project_for(self.request.user, self.kwargs["slug"])[1]

    def get_queryset(self):  # noqa: ANN201
        return self.model.objects.filter(project=self.membership().project)


class EnvironmentList(_ProjectScoped):
    model = Environment
    serializer_class = EnvironmentSerializer

    def perform_create(self, serializer):  # noqa: ANN001, ANN201
        serializer.instance = services.create_environment(
            self.request.user, self.membership(), **serializer.validated_data
        )


class ServiceList(_ProjectScoped):
    model = Service
    serializer_class = ServiceSerializer

    def perform_create(self, serializer):  # noqa: ANN001, ANN201
        serializer.instance = services.create_service(
            self.request.user, self.membership(), **serializer.validated_data
        )


class MemberList(_ProjectScoped):
    model = Membership
    serializer_class = MemberSerializer

    def get_queryset(self):  # noqa: ANN201
        return super().get_queryset().select_related("user")

    def perform_create(self, serializer):  # noqa: ANN001, ANN201
        data = serializer.validated_data
        serializer.instance = services.add_member(
            self.request.user,
            self.membership(),
            username=data["user"]["username"],
            role=data.get("role", Membership.Role.ENGINEER),
            signoff_capacities=data.get("signoff_capacities"),
        )


class TokenList(generics.ListCreateAPIView):
    serializer_class = TokenSerializer

    def get_queryset(self):  # noqa: ANN201
        return ApiToken.objects.filter(user=self.request.user)

    @extend_schema(request=TokenSerializer, responses={201: NewTokenSerializer})
    def post(self, request):  # noqa: ANN001, ANN201
        serializer = TokenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, raw = services.create_api_token(request.user, serializer.validated_data["name"])
        body = NewTokenSerializer(token).data
        body["token"] = raw
        return Response(body, status=status.HTTP_201_CREATED)


class TokenRevoke(APIView):
    @extend_schema(request=None, responses={200: TokenSerializer})
    def delete(self, request, pk: int):  # noqa: ANN001, ANN201
        token = ApiToken.objects.filter(pk=pk, user=request.user).first()
        if token is None:
            raise Http404
        token = services.revoke_api_token(request.user, token)
        return Response(TokenSerializer(token).data)
