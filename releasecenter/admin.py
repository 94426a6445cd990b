"""/admin, for staff only, and read-only for the core models.

Every change of a project, its environments, services, members and tokens goes through the
service functions behind the app's own pages and API, which check roles and write audit events;
an admin form would save around both. Staff can look, and fix data through those pages.
"""

from django.contrib import admin

from .models import ApiToken, AuditEvent, Environment, Membership, Project, Service


class ReadOnly:
    def has_add_permission(self, request, obj=None):  # noqa: ANN001, ANN201
        return False

    def has_change_permission(self, request, obj=None):  # noqa: ANN001, ANN201
        return False

    def has_delete_permission(self, request, obj=None):  # noqa: ANN001, ANN201
        return False


class EnvironmentInline(ReadOnly, admin.TabularInline):
    model = Environment
    extra = 0


class ServiceInline(ReadOnly, admin.TabularInline):
    model = Service
    extra = 0


class MembershipInline(ReadOnly, admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Project)
class ProjectAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    inlines = [EnvironmentInline, ServiceInline, MembershipInline]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnly, admin.ModelAdmin):
    """The audit log is append-only, even for staff."""

    list_display = ["id", "created_at", "verb", "topic", "actor", "project"]
    list_filter = ["verb"]
    search_fields = ["topic", "verb", "object_id"]
    list_select_related = ["actor", "project"]


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ["name", "user", "hint", "created_at", "last_used_at", "revoked_at"]
    exclude = ["token_hash"]
