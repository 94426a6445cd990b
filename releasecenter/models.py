"""Core models: projects, their environments, services and members, the event log, API tokens."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

slug_validator = RegexValidator(
    r"^[a-z0-9]+(?:-[a-z0-9]+)*$", "Use lowercase letters, digits and single hyphens."
)
name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    "Start with a letter or digit; then letters, digits, '.', '_' or '-'.",
)


class Project(models.Model):
    slug = models.SlugField(max_length=60, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=120)
    # Small teams may let the person who requests a deployment count towards its sign-off quorum.
    requester_counts_for_quorum = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def topic(self) -> str:
        return f"project:{self.pk}"


class Environment(models.Model):
    class Kind(models.TextChoices):
        STAGING = "staging", "Staging"
        PRODUCTION = "production", "Production"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="environments")
    name = models.CharField(max_length=60, validators=[name_validator])
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.STAGING)
    # Promotion order: lower comes first (staging 10, production 20).
    order = models.PositiveIntegerField(default=0)
    protected = models.BooleanField(default=False)
    # Where the environment's services answer, e.g. https://staging.example.com; health paths
    # of services are joined to it.
    base_url = models.URLField(blank=True, default="")

    class Meta:
        ordering = ["project", "order", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="uniq_environment_name"),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.name}"


class Service(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="services")
    name = models.CharField(max_length=80, validators=[name_validator])
    # Startup order: tier 1 starts first; a tier's services deploy in parallel.
    tier = models.PositiveIntegerField(default=1)
    health_path = models.CharField(max_length=200, default="/health")

    class Meta:
        ordering = ["project", "tier", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="uniq_service_name"),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.name}"

    def clean(self) -> None:
        if not self.health_path.startswith("/"):
            raise ValidationError({"health_path": "A health path starts with '/'."})


class Membership(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer", "Viewer"
        ENGINEER = "engineer", "Engineer"
        LEAD = "lead", "Lead"
        ADMIN = "admin", "Admin"

    # Roles are ordered: each includes what the ones before it may do.
    RANK = {Role.VIEWER: 0, Role.ENGINEER: 1, Role.LEAD: 2, Role.ADMIN: 3}

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.ENGINEER)
    # The sign-off roles this member may fill, e.g. ["Backend Engineer", "Security Review"].
    signoff_capacities = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["project", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["user", "project"], name="uniq_membership"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} as {self.role}"

    def has_role(self, minimum: str) -> bool:
        return self.RANK[self.role] >= self.RANK[minimum]


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):  # noqa: ANN003, ANN201
        raise TypeError("Audit events are append-only.")

    def delete(self):  # noqa: ANN201
        raise TypeError("Audit events are append-only; retention uses prune_expired().")

    def prune_expired(self, before):  # noqa: ANN001, ANN201
        """The one sanctioned deletion: retention of old rows, by time."""
        return models.QuerySet.delete(self.filter(created_at__lt=before))


class AuditEvent(models.Model):
    """An append-only record of a change of state.

    The same rows are the audit log, the release and incident timelines and the source of the
    live event stream: a browser asks for the events of a topic after the last id it saw.
    """

    topic = models.CharField(max_length=120, db_index=True)
    verb = models.CharField(max_length=80)
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    object_type = models.CharField(max_length=60, blank=True, default="")
    object_id = models.CharField(max_length=64, blank=True, default="")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    # What the live stream sends to browsers; for audit-only events it may be empty.
    data = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The event's place in its topic's live stream, given as its transaction commits. Event ids
    # come from a sequence at insert, but transactions commit in their own order: id 101 can be
    # visible before id 100, and a stream that moved past 101 would never send 100. On
    # PostgreSQL a deferred trigger (migration 0002) numbers a transaction's events just before
    # it commits, under a lock held until the commit ends, so positions become visible in order
    # and a stream that reads "after position N" never skips one. SQLite has one writer at a
    # time, so there the id already is the position and this stays empty.
    stream_position = models.BigIntegerField(null=True, blank=True, editable=False)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["topic", "id"], name="auditevent_topic_id"),
            models.Index(fields=["topic", "stream_position"], name="auditevent_topic_position"),
            models.Index(fields=["project", "-id"], name="auditevent_project_id"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.verb} on {self.topic}"

    def save(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        if self.pk is not None:
            raise TypeError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        raise TypeError("Audit events are append-only.")


class ApiToken(models.Model):
    """A per-user bearer token. Only a SHA-256 of the secret is stored; it is shown once."""

    PREFIX = "rc_"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=80)
    # The first characters of the token, so a user can tell tokens apart without the secret.
    hint = models.CharField(max_length=12)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"

    @staticmethod
    def hash(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class WorkerHeartbeat(models.Model):
    """Each Celery worker writes its hostname here every few seconds; /health counts the fresh ones."""

    hostname = models.CharField(max_length=200, unique=True)
    last_seen = models.DateTimeField()

    def __str__(self) -> str:
        return self.hostname
