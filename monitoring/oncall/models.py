"""On-call: rotations, notification channels and their deliveries, the public status page.

Imported by ``monitoring.models`` so the app's migrations and admin see these models.

* ``Schedule`` with ordered ``ScheduleMember`` rows and ``ScheduleOverride`` windows; who is on
  call is computed (``monitoring.lib.rotation``), never stored.
* ``NotificationChannel`` (webhook, Slack-compatible webhook, e-mail) per project. Its URL and
  secret are encrypted at rest and never shown back. A ``ChannelMessage`` is one message to one
  channel, written in the transaction that decides to send it, delivered by a task on the
  notifications queue; every try is a ``DeliveryAttempt`` row.
* ``StatusPage`` (off by default), its public ``StatusGroup``s of services, and ``StatusDay``:
  each group's state per day, precomputed on beat so the public page reads 90 rows per group
  instead of aggregating rollups on every request.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from releasecenter.crypto import EncryptedTextField
from releasecenter.models import Environment, Project, Service

from ..incidents.models import Incident, Severity, TimelineEntry


class Schedule(models.Model):
    class Rotation(models.TextChoices):
        DAILY = "daily", "Daily"
        WEEKLY = "weekly", "Weekly"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="oncall_schedules")
    name = models.CharField(max_length=80)
    time_zone = models.CharField(max_length=64, default="UTC")
    rotation = models.CharField(max_length=8, choices=Rotation.choices, default=Rotation.WEEKLY)
    handoff = models.TimeField()
    # Weekly rotations hand off on this weekday (Monday = 0).
    handoff_weekday = models.PositiveSmallIntegerField(default=0)
    # The local date of the first shift: the rotation counts handoffs from here.
    anchor = models.DateField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["project", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="uniq_schedule_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.project})"


class ScheduleMember(models.Model):
    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["schedule", "position"]
        constraints = [
            models.UniqueConstraint(fields=["schedule", "position"], name="uniq_schedule_position"),
            models.UniqueConstraint(fields=["schedule", "user"], name="uniq_schedule_member"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} #{self.position} in schedule {self.schedule_id}"


class ScheduleOverride(models.Model):
    """Someone covers a window of a schedule. Windows of one schedule never overlap: the service
    checks that under a lock on the schedule row."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="overrides")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=200, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["schedule", "starts_at"]
        indexes = [models.Index(fields=["schedule", "ends_at"], name="override_schedule_end")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ends_at__gt=models.F("starts_at")), name="override_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"override of schedule {self.schedule_id} from {self.starts_at}"


class NotificationChannel(models.Model):
    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Webhook (signed JSON)"
        SLACK = "slack", "Slack-compatible webhook"
        EMAIL = "email", "E-mail"

    class Health(models.TextChoices):
        UNKNOWN = "unknown", "Not used yet"
        OK = "ok", "Delivering"
        FAILING = "failing", "Failing"

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="notification_channels"
    )
    name = models.CharField(max_length=80)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # Webhook URLs are credentials (a Slack URL is its own secret): encrypted, never shown back.
    url = EncryptedTextField(blank=True, default="")
    secret = EncryptedTextField(blank=True, default="")
    emails = models.TextField(blank=True, default="")
    # Whose address policy (allow-list) the guard applies to this channel's URL; none: public
    # addresses only, as for a check in an environment with no allow-list.
    address_environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    enabled = models.BooleanField(default=True)
    health = models.CharField(max_length=8, choices=Health.choices, default=Health.UNKNOWN)
    health_changed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["project", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="uniq_channel_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def email_list(self) -> list[str]:
        return [e.strip() for e in self.emails.replace(",", "\n").splitlines() if e.strip()]


class ChannelMessage(models.Model):
    """One message to one channel. Claimed with a token before each try (a redelivered task
    sends nothing twice); retried with backoff up to MAX_ATTEMPTS."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    # A project channel, or none for a page e-mailed to one person (``to_email``).
    channel = models.ForeignKey(
        NotificationChannel,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="messages",
    )
    to_email = models.EmailField(blank=True, default="")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    event = models.CharField(max_length=40)
    subject = models.CharField(max_length=200)
    text = models.TextField()
    payload = models.JSONField(default=dict)
    # The incident this pages about, if any (a plain id: incidents are written elsewhere).
    incident_id = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    claim_token = models.UUIDField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["channel", "-created_at"], name="chmsg_channel_time"),
            models.Index(fields=["project", "-created_at"], name="chmsg_project_time"),
        ]

    def __str__(self) -> str:
        return self.subject


class DeliveryAttempt(models.Model):
    message = models.ForeignKey(ChannelMessage, on_delete=models.CASCADE, related_name="tries")
    number = models.PositiveSmallIntegerField()
    attempted_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.FloatField(default=0.0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    ok = models.BooleanField(default=False)
    # Never a URL or a secret: the kind of failure and the status code only.
    error = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["message", "number"]

    def __str__(self) -> str:
        return f"try {self.number} of message {self.message_id}"


class StatusPage(models.Model):
    """A project's public status page at /status/<slug>/. Off until an admin switches it on."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="status_page")
    enabled = models.BooleanField(default=False)
    title = models.CharField(max_length=120, blank=True, default="")
    # The environment whose checks decide the state shown (usually production).
    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"status page of project {self.project_id}"


class StatusGroup(models.Model):
    """A service group as customers see it: a public name, never the services' own names."""

    page = models.ForeignKey(StatusPage, on_delete=models.CASCADE, related_name="groups")
    name = models.CharField(max_length=80)
    position = models.PositiveSmallIntegerField(default=0)
    services = models.ManyToManyField(Service, related_name="+", blank=True)
    # The bars of the 89 days before ``history_through`` + 1, as HTML built from StatusDay rows
    # (status_page.rebuild_history), so a request formats only today's bar.
    history_html = models.TextField(blank=True, default="")
    history_through = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["page", "position", "id"]

    def __str__(self) -> str:
        return self.name


class StatusDay(models.Model):
    class State(models.TextChoices):
        NO_DATA = "none", "No data"
        OPERATIONAL = "operational", "Operational"
        DEGRADED = "degraded", "Degraded"
        OUTAGE = "outage", "Outage"

    group = models.ForeignKey(StatusGroup, on_delete=models.CASCADE, related_name="days")
    day = models.DateField()
    state = models.CharField(max_length=12, choices=State.choices)
    runs = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "day"], name="uniq_status_day"),
        ]

    def __str__(self) -> str:
        return f"{self.group_id} {self.day} {self.state}"


# --- Escalation ----------------------------------------------------------------------------------


class EscalationLevel(models.Model):
    """One step of a project's escalation policy for a severity: page this schedule's on-call
    and/or these members, then wait ``wait_minutes`` before the next level may be paged (and
    never before the severity's acknowledge SLA has run out)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="escalation_levels")
    severity = models.CharField(max_length=2, choices=Severity.choices)
    position = models.PositiveSmallIntegerField()
    schedule = models.ForeignKey(
        Schedule, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="+", blank=True)
    wait_minutes = models.PositiveIntegerField(default=5)

    class Meta:
        ordering = ["project", "severity", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "severity", "position"], name="uniq_escalation_level"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.severity} level {self.position} of project {self.project_id}"


class EscalationPage(models.Model):
    """Level ``level`` of an incident's escalation was paged. The unique row is the claim: the
    tick inserts it with ON CONFLICT DO NOTHING and pages only for the rows it inserted, so two
    beats, a redelivered task or two workers never page the same level twice."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="pages")
    level = models.PositiveSmallIntegerField()
    paged_at = models.DateTimeField()
    recipients = models.JSONField(default=list)
    # The one-tap acknowledge link of this page works once.
    link_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["incident", "level"]
        constraints = [
            models.UniqueConstraint(fields=["incident", "level"], name="uniq_page_per_level"),
        ]

    def __str__(self) -> str:
        return f"level {self.level} of incident {self.incident_id}"


# --- What the status page may show of incidents -------------------------------------------------


class PublicIncident(models.Model):
    """An incident marked public, with the title customers see (never its internal one)."""

    incident = models.OneToOneField(Incident, on_delete=models.CASCADE, related_name="public")
    title = models.CharField(max_length=200)
    marked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    marked_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.title


class PublicUpdate(models.Model):
    """A timeline entry its author marked public: its text appears on the status page."""

    entry = models.OneToOneField(TimelineEntry, on_delete=models.CASCADE, related_name="public")
    marked_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"public entry {self.entry_id}"
