"""REST API for checklists: import runbooks, read templates, open runs, change run items.

Thin like the pages: access helpers resolve the project (outsiders get 404, viewers may read,
engineers and up may write), serializers check shapes, services do the work. Domain errors map
through releasecenter.api.exception_handler: ValidationError → 400, Conflict → 409.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from releasecenter.access import project_for
from releasecenter.api_fields import MomentField
from releasecenter.models import Membership
from releasecenter.parsers import JSONParser

from . import drafts, selectors, services
from .lib.markdown_export import export_runbook
from .lib.markdown_import import MAX_RUNBOOK_BYTES
from .models import ChecklistTemplate, Run, RunItem

ENGINEER = Membership.Role.ENGINEER


class MarkdownParser(BaseParser):
    """A runbook posted as it is: ``Content-Type: text/markdown`` (or text/plain)."""

    media_type = "text/*"

    def parse(self, stream, media_type=None, parser_context=None):  # noqa: ANN001, ANN201
        data = stream.read(MAX_RUNBOOK_BYTES + 1) if stream is not None else b""
        if len(data) > MAX_RUNBOOK_BYTES:
            raise ValidationError(
                {"markdown": f"The runbook is over {MAX_RUNBOOK_BYTES:,} bytes (1 MiB)."}
            )
        return {"_raw": data}


# --- Serializers ------------------------------------------------------------------------------


class ImportSummarySerializer(serializers.Serializer):
    template_id = serializers.IntegerField()
    name = serializers.CharField()
    sections = serializers.IntegerField()
    items = serializers.IntegerField(help_text="Sub-items count as items.")
    commands = serializers.IntegerField()
    gates = serializers.DictField(child=serializers.IntegerField())
    signoff_roles = serializers.ListField(child=serializers.CharField())


class ImportRequestSerializer(serializers.Serializer):
    markdown = serializers.CharField(trim_whitespace=False)
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    kind = serializers.ChoiceField(
        choices=ChecklistTemplate.Kind.choices, required=False, allow_blank=True
    )


class TemplateSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="current_version.number", read_only=True)

    class Meta:
        model = ChecklistTemplate
        fields = ["id", "name", "kind", "version", "created_at", "updated_at"]


class RunItemSerializer(serializers.ModelSerializer):
    key = serializers.CharField(read_only=True)
    text = serializers.CharField(source="item.text")
    severity = serializers.CharField(source="item.severity")
    depth = serializers.IntegerField(source="item.depth")
    done_by = serializers.CharField(source="done_by.username", default=None)
    evidence_required = serializers.BooleanField(source="item.evidence_required")

    class Meta:
        model = RunItem
        fields = [
            "key",
            "text",
            "severity",
            "depth",
            "state",
            "version",
            "done_by",
            "done_at",
            "na_reason",
            "note",
            "evidence_required",
            "automation_passed",
            "automation_summary",
        ]


class RunSerializer(serializers.ModelSerializer):
    template = serializers.CharField(source="template.name")
    template_version = serializers.IntegerField(source="template_version.number")
    environment = serializers.CharField(source="environment.name", default=None)
    progress = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = [
            "id",
            "title",
            "template",
            "template_id",
            "template_version",
            "environment",
            "planned_start",
            "status",
            "created_at",
            "completed_at",
            "deadline",
            "progress",
        ]

    def get_progress(self, run: Run) -> dict:
        finished, total = self.context.get("progress", {}).get(run.pk, (0, 0))
        return {"finished": finished, "total": total}


class RunCreateSerializer(serializers.Serializer):
    template_id = serializers.IntegerField()
    environment = serializers.CharField(required=False, allow_null=True, help_text="Its name.")
    planned_start = MomentField(required=False, allow_null=True)
    title = serializers.CharField(required=False, allow_blank=True, max_length=300)


class ItemChangeSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=["tick", "untick", "na", "note"])
    version = serializers.IntegerField(
        help_text="The item version you saw; a stale one is refused with 409."
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500)
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class EvidenceLinkSerializer(serializers.Serializer):
    url = serializers.URLField(max_length=2000)
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)


# --- Views ------------------------------------------------------------------------------------


class TemplateImport(APIView):
    """POST the Markdown: ``text/markdown`` as the body (``?name=`` and ``?kind=`` optional),
    JSON ``{"markdown", "name", "kind"}``, or a multipart ``file``."""

    parser_classes = [MarkdownParser, JSONParser, MultiPartParser]

    @extend_schema(
        request={
            "text/markdown": OpenApiTypes.STR,
            "application/json": ImportRequestSerializer,
            "multipart/form-data": {"type": "object", "properties": {"file": {"type": "string"}}},
        },
        responses={201: ImportSummarySerializer},
        examples=[
            OpenApiExample(
                "Imported",
                response_only=True,
                value={
                    "template_id": 7,
                    "name": "Production deployment runbook",
                    "sections": 14,
                    "items": 52,
                    "commands": 6,
                    "gates": {"no_go": 12, "conditional": 6, "warning": 8},
                    "signoff_roles": ["Backend Engineer", "Technical Lead"],
                },
            )
        ],
    )
    def post(self, request, slug: str):  # noqa: ANN001, ANN201
        project, _membership = project_for(request.user, slug, ENGINEER)
        data = request.data
        filename = None
        if "_raw" in data:
            source = data["_raw"]
            name, kind = request.query_params.get("name"), request.query_params.get("kind")
        elif "file" in getattr(request, "FILES", {}):
            upload = request.FILES["file"]
            if upload.size > MAX_RUNBOOK_BYTES:
                raise ValidationError({"markdown": "The runbook is over 1,048,576 bytes (1 MiB)."})
            source, filename = upload.read(), upload.name
            name, kind = data.get("name"), data.get("kind")
        else:
            body = ImportRequestSerializer(data=data)
            body.is_valid(raise_exception=True)
            source = body.validated_data["markdown"]
            name, kind = body.validated_data.get("name"), body.validated_data.get("kind")
        outcome = services.import_runbook(
            request.user, project, source, name=name or None, kind=kind or None, filename=filename
        )
        return Response(outcome.summary, status=status.HTTP_201_CREATED)


class TemplateList(generics.ListAPIView):
    serializer_class = TemplateSerializer

    def get_queryset(self):  # noqa: ANN201
        project, _membership = project_for(self.request.user, self.kwargs["slug"])
        return (
            ChecklistTemplate.objects.filter(project=project, archived_at__isnull=True)
            .select_related("current_version")
            .order_by("name")
        )


def _template(request, slug: str, pk: int) -> ChecklistTemplate:  # noqa: ANN001
    project, _membership = project_for(request.user, slug)
    template = (
        ChecklistTemplate.objects.filter(project=project, pk=pk)
        .select_related("current_version")
        .first()
    )
    if template is None:
        raise Http404
    return template


class TemplateDetail(APIView):
    @extend_schema(responses={200: ImportSummarySerializer})
    def get(self, request, slug: str, pk: int):  # noqa: ANN001, ANN201
        """The template's counts (the import JSON) for its current version."""
        template = _template(request, slug, pk)
        body = services.import_summary(template)
        body["version"] = template.current_version.number
        body["kind"] = template.kind
        return Response(body)


class TemplateExport(APIView):
    @extend_schema(responses={(200, "text/markdown"): OpenApiTypes.STR})
    def get(self, request, slug: str, pk: int):  # noqa: ANN001, ANN201
        """The current version as Markdown that imports back into the same tree."""
        template = _template(request, slug, pk)
        markdown = export_runbook(drafts.to_parsed(drafts.load(template.current_version)))
        return HttpResponse(markdown, content_type="text/markdown; charset=utf-8")


def _runs_project(request, slug: str, minimum: str = Membership.Role.VIEWER):  # noqa: ANN001, ANN202
    return project_for(request.user, slug, minimum)[0]


class RunList(generics.GenericAPIView):
    serializer_class = RunSerializer

    @extend_schema(responses={200: RunSerializer(many=True)})
    def get(self, request, slug: str):  # noqa: ANN001, ANN201
        """Runs of the project, newest first; ``?status=open|completed``."""
        project = _runs_project(request, slug)
        runs = Run.objects.filter(project=project).select_related(
            "template", "template_version", "environment"
        )
        status_filter = request.query_params.get("status")
        if status_filter:
            runs = runs.filter(status=status_filter)
        page = self.paginate_queryset(runs.order_by("-created_at", "-id"))
        progress = selectors.run_progress([r.pk for r in page])
        return self.get_paginated_response(
            RunSerializer(page, many=True, context={"progress": progress}).data
        )

    @extend_schema(request=RunCreateSerializer, responses={201: RunSerializer})
    def post(self, request, slug: str):  # noqa: ANN001, ANN201
        project = _runs_project(request, slug, ENGINEER)
        body = RunCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        template = ChecklistTemplate.objects.filter(project=project, pk=data["template_id"]).first()
        if template is None:
            raise ValidationError({"template_id": "No such template in this project."})
        environment = None
        if data.get("environment"):
            environment = project.environments.filter(name=data["environment"]).first()
            if environment is None:
                raise ValidationError({"environment": f"No environment '{data['environment']}'."})
        run = services.create_run(
            request.user,
            template,
            environment=environment,
            planned_start=data.get("planned_start"),
            title=data.get("title") or None,
        )
        run = Run.objects.select_related("template", "template_version", "environment").get(
            pk=run.pk
        )
        progress = selectors.run_progress([run.pk])
        return Response(
            RunSerializer(run, context={"progress": progress}).data, status=status.HTTP_201_CREATED
        )


def _run(request, slug: str, pk: int, minimum: str = Membership.Role.VIEWER) -> Run:  # noqa: ANN001
    project = _runs_project(request, slug, minimum)
    run = (
        Run.objects.filter(project=project, pk=pk)
        .select_related("template", "template_version", "environment")
        .first()
    )
    if run is None:
        raise Http404
    return run


def _run_item(run: Run, item_id: int) -> RunItem:
    row = RunItem.objects.filter(run=run, pk=item_id).select_related("item", "done_by").first()
    if row is None:
        raise Http404
    return row


class RunDetail(APIView):
    @extend_schema(responses={200: RunSerializer})
    def get(self, request, slug: str, pk: int):  # noqa: ANN001, ANN201
        """The run with every item (sub-items included) in document order."""
        run = _run(request, slug, pk)
        progress = selectors.run_progress([run.pk])
        body = RunSerializer(run, context={"progress": progress}).data
        rows = (
            RunItem.objects.filter(run=run)
            .select_related("item", "done_by")
            .order_by("item__position")
        )
        body["items"] = RunItemSerializer(rows, many=True).data
        return Response(body)


class RunItemChange(APIView):
    @extend_schema(request=ItemChangeSerializer, responses={200: RunItemSerializer})
    def post(self, request, slug: str, pk: int, item_id: int):  # noqa: ANN001, ANN201
        """Tick, untick, mark N/A (``reason``) or set the note (``note``). Send the ``version``
        you saw: if the item changed since, the answer is 409 with the current item."""
        run = _run(request, slug, pk, ENGINEER)
        row = _run_item(run, item_id)
        body = ItemChangeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data, user = body.validated_data, request.user
        try:
            if data["action"] == "tick":
                services.tick(user, row, expected_version=data["version"])
            elif data["action"] == "untick":
                services.untick(user, row, expected_version=data["version"])
            elif data["action"] == "na":
                services.mark_na(
                    user, row, reason=data.get("reason", ""), expected_version=data["version"]
                )
            else:
                services.set_note(
                    user, row, note=data.get("note", ""), expected_version=data["version"]
                )
        except services.Conflict as exc:
            current = RunItemSerializer(_run_item(run, item_id)).data
            return Response({"detail": str(exc), "item": current}, status=status.HTTP_409_CONFLICT)
        return Response(RunItemSerializer(_run_item(run, item_id)).data)


class RunItemEvidence(APIView):
    parser_classes = [MultiPartParser, JSONParser]

    @extend_schema(
        request={
            "multipart/form-data": {"type": "object", "properties": {"file": {"type": "string"}}},
            "application/json": EvidenceLinkSerializer,
        },
        responses={201: OpenApiTypes.OBJECT},
    )
    def post(self, request, slug: str, pk: int, item_id: int):  # noqa: ANN001, ANN201
        """Attach a file (multipart ``file``, up to 25 MiB of an allowed type) or a link."""
        run = _run(request, slug, pk, ENGINEER)
        row = _run_item(run, item_id)
        if "file" in request.FILES:
            evidence = services.add_evidence_file(request.user, row, request.FILES["file"])
        else:
            body = EvidenceLinkSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            evidence = services.add_evidence_link(
                request.user, row, body.validated_data["url"], body.validated_data.get("name", "")
            )
        return Response(
            {
                "id": evidence.pk,
                "kind": evidence.kind,
                "name": evidence.name,
                "size": evidence.size,
                "content_type": evidence.content_type,
            },
            status=status.HTTP_201_CREATED,
        )


class RunItemAutomation(APIView):
    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, slug: str, pk: int, item_id: int):  # noqa: ANN001, ANN201
        """Queue the item's automated check; the result arrives on the run's event stream."""
        run = _run(request, slug, pk, ENGINEER)
        row = _run_item(run, item_id)
        if not row.item.automation:
            raise ValidationError("This item has no automated check.")
        from .tasks import run_automated_item

        row_id, user_id = row.pk, request.user.pk
        transaction.on_commit(lambda: run_automated_item.delay(row_id, user_id))
        return Response({"queued": True, "item": row.key}, status=status.HTTP_202_ACCEPTED)


class RunReport(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, slug: str, pk: int):  # noqa: ANN001, ANN201
        """Every item with its state, who and when, N/A reason, note and evidence."""
        return Response(selectors.run_report(_run(request, slug, pk)))
