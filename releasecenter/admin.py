from django.contrib import admin

from .models import ApiToken, AuditEvent, Environment, Membership, Project, Service


class EnvironmentInline(admin.TabularInline):
    model = Environment
    extra = 0


class ServiceInline(admin.TabularInline):
    model = Service
    extra = 0


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    inlines = [EnvironmentInline, ServiceInline, MembershipInline]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the audit log is append-only, even for staff."""

    list_display = ["id", "created_at", "verb", "topic", "actor", "project"]
    list_filter = ["verb"]
    search_fields = ["topic", "verb", "object_id"]
    list_select_related = ["actor", "project"]

    def has_add_permission(self, request):  # noqa: ANN001, ANN201
        return False

    def has_change_permission(self, request, obj=None):  # noqa: ANN001, ANN201
        return False

    def has_delete_permission(self, request, obj=None):  # noqa: ANN001, ANN201
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "hint", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["token_hash", "hint"]
    exclude: list[str] = []
