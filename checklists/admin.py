from django.contrib import admin

from .models import ChecklistTemplate, Evidence, RecurringSchedule, Run, RunItem, TemplateVersion


class VersionInline(admin.TabularInline):
    model = TemplateVersion
    extra = 0
    fields = ["number", "source", "summary", "created_by", "created_at"]
    readonly_fields = fields
    can_delete = False


@admin.register(ChecklistTemplate)
class ChecklistTemplateAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "kind", "current_version", "archived_at"]
    list_filter = ["kind", "project"]
    search_fields = ["name"]
    raw_id_fields = ["current_version", "created_by"]
    inlines = [VersionInline]


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["title", "project", "environment", "status", "created_at", "deadline"]
    list_filter = ["status", "project"]
    search_fields = ["title"]
    raw_id_fields = ["template", "template_version", "environment", "created_by", "schedule"]


@admin.register(RunItem)
class RunItemAdmin(admin.ModelAdmin):
    # State changes go through the services (conflict checks, audit events): read-only here.
    list_display = ["pk", "run", "state", "version", "done_by", "done_at"]
    list_filter = ["state"]
    raw_id_fields = ["run", "item", "done_by", "changed_by"]

    def has_change_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False


@admin.register(Evidence)
class EvidenceAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "run", "size", "uploaded_by", "uploaded_at"]
    list_filter = ["kind"]
    raw_id_fields = ["run", "run_item", "uploaded_by"]


@admin.register(RecurringSchedule)
class RecurringScheduleAdmin(admin.ModelAdmin):
    list_display = ["template", "environment", "frequency", "time_of_day", "timezone", "active"]
    list_filter = ["frequency", "active"]
    raw_id_fields = ["template", "environment", "created_by", "project"]
