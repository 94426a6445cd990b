from django.contrib import admin

from .models import Check, CheckResult, EnvironmentMonitoring, Notification, PerformanceTarget


@admin.register(Check)
class CheckAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "project", "environment", "service", "status", "enabled"]
    list_filter = ["kind", "status", "enabled"]
    search_fields = ["name", "url"]
    # Secret header values are never shown, not even to superusers.
    exclude = ["secret_headers", "dispatch_token", "run_request_token"]
    readonly_fields = ["secret_header_names", "status", "status_changed_at", "last_run_at"]
    raw_id_fields = ["project", "environment", "service", "parent", "created_by"]


@admin.register(CheckResult)
class CheckResultAdmin(admin.ModelAdmin):
    list_display = ["health_check", "started_at", "passed", "status_code", "latency_ms", "trigger"]
    list_filter = ["passed", "trigger"]
    raw_id_fields = ["health_check"]


@admin.register(EnvironmentMonitoring)
class EnvironmentMonitoringAdmin(admin.ModelAdmin):
    list_display = ["environment", "allow_public", "updated_at"]
    exclude = ["webhook_url"]
    raw_id_fields = ["environment", "updated_by"]


@admin.register(PerformanceTarget)
class PerformanceTargetAdmin(admin.ModelAdmin):
    list_display = ["environment", "metric", "target", "alert_threshold", "status", "last_value"]


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["subject", "environment", "status", "attempts", "created_at"]
    list_filter = ["status"]
    raw_id_fields = ["environment", "health_check", "target"]
