"""Incidents: severities and their SLA policy, the incident itself, its timeline and postmortem.

An ``Incident`` has one ``status`` with an explicit table of allowed moves (``TRANSITIONS``);
every move names its reason and becomes a timeline entry and an audit event. ``version`` grows
with every change so a writer holding a stale copy gets a conflict instead of overwriting.

The two SLA clocks are stored as due times (``acknowledge_due_at``, ``update_due_at``) set by the
services whenever the severity, the start or the last stakeholder update changes, so the beat
evaluation is one indexed query over open incidents rather than a computation per row.

What the system itself saw (deployments, checks, sign-offs...) is not copied into
``TimelineEntry``: it is merged in when the timeline is read (``timeline.merged``). Entries here
are those people write and what happened to the incident itself (status, severity, breaches).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from releasecenter.models import Environment, Project, Service

__all__ = [
    "ActionItem",
    "AutoIncidentPolicy",
    "Incident",
    "IncidentSuggestion",
    "Postmortem",
    "SeverityPolicy",
    "TimelineEntry",
]

SEVERITIES = ["P0", "P1", "P2", "P3", "P4"]


def severity_rank(severity: str) -> int:
    """0 for P0 (the worst) up to 4 for P4."""
    return SEVERITIES.index(severity)


def at_least(severity: str) -> list[str]:
    """The severities as bad as this one or worse: at_least("P2") == ["P0", "P1", "P2"]."""
    return SEVERITIES[: severity_rank(severity) + 1]


class Severity(models.TextChoices):
    P0 = "P0", "P0 — complete outage"
    P1 = "P1", "P1 — major feature broken"
    P2 = "P2", "P2 — minor feature broken"
    P3 = "P3", "P3 — low impact"
    P4 = "P4", "P4 — cosmetic"


# Defaults from the E-Learning production checklist's severity table: seconds to acknowledge,
# and how often a stakeholder update is due while the incident is open. None means "by the next
# working day" (09:00 on the next weekday, in settings.TIME_ZONE).
DEFAULT_POLICY: dict[str, tuple[int | None, int | None]] = {
    "P0": (0, 15 * 60),
    "P1": (15 * 60, 30 * 60),
    "P2": (60 * 60, 60 * 60),
    "P3": (240 * 60, 240 * 60),
    "P4": (None, None),
}


class SeverityPolicy(models.Model):
    """A project's clocks for one severity; a missing row means DEFAULT_POLICY."""

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="incident_severity_policies"
    )
    severity = models.CharField(max_length=2, choices=Severity.choices)
    # Seconds (so a test can give P1 a few seconds to be acknowledged); 0 is "immediately",
    # null is "by the next working day".
    acknowledge_seconds = models.PositiveIntegerField(null=True, blank=True)
    update_seconds = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["project", "severity"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "severity"], name="uniq_severity_policy_per_project"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.severity} policy of {self.project}"


class AutoIncidentPolicy(models.Model):
    """What the system does in one environment when it sees trouble (a check turning critical,
    a deployment that failed verification or was rolled back automatically)."""

    class Mode(models.TextChoices):
        OFF = "off", "Do nothing"
        SUGGEST = "suggest", "Suggest an incident (one click to open)"
        OPEN = "open", "Open an incident"

    environment = models.OneToOneField(
        Environment, on_delete=models.CASCADE, related_name="auto_incident_policy"
    )
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.SUGGEST)
    severity = models.CharField(max_length=2, choices=Severity.choices, default=Severity.P2)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"auto incidents in {self.environment}: {self.mode}"


class IncidentQuerySet(models.QuerySet):
    def open(self) -> IncidentQuerySet:
        return self.filter(status__in=Incident.OPEN_STATUSES)

    def blocking(self, environment: Environment, severities: list[str]) -> IncidentQuerySet:
        """Open incidents of these severities that affect the environment (the release gate)."""
        return (
            self.open()
            .filter(environments=environment, severity__in=severities)
            .order_by("severity", "started_at")
        )


class Incident(models.Model):
    class Status(models.TextChoices):
        INVESTIGATING = "investigating", "Investigating"
        IDENTIFIED = "identified", "Identified"
        MONITORING = "monitoring", "Monitoring"
        RESOLVED = "resolved", "Resolved"
        CLOSED = "closed", "Closed"

    S = Status
    # Forward through the lifecycle; when it flares up again, any earlier status may be
    # re-entered from monitoring or resolved. Closed is final: incidents are never deleted.
    TRANSITIONS: dict[str, list[str]] = {
        S.INVESTIGATING: [S.IDENTIFIED, S.MONITORING, S.RESOLVED],
        S.IDENTIFIED: [S.MONITORING, S.RESOLVED],
        S.MONITORING: [S.RESOLVED, S.INVESTIGATING, S.IDENTIFIED],
        S.RESOLVED: [S.CLOSED, S.INVESTIGATING, S.IDENTIFIED, S.MONITORING],
        S.CLOSED: [],
    }
    OPEN_STATUSES = [S.INVESTIGATING, S.IDENTIFIED, S.MONITORING]

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="incidents")
    # Per project, shown as INC-<number>.
    number = models.PositiveIntegerField()
    title = models.CharField(max_length=200)
    summary = models.TextField(blank=True, default="")
    severity = models.CharField(max_length=2, choices=Severity.choices)
    environments = models.ManyToManyField(Environment, related_name="incidents", blank=True)
    services = models.ManyToManyField(Service, related_name="incidents", blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.INVESTIGATING)
    status_changed_at = models.DateTimeField(default=timezone.now)
    commander = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="commanded_incidents",
    )
    participants = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="incidents", blank=True
    )
    # Editable, for incidents noticed late; the clocks run from here.
    started_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    # The SLA clocks (see the module docstring). A breach is stamped once per due time.
    acknowledge_due_at = models.DateTimeField(null=True, blank=True)
    acknowledge_breached_at = models.DateTimeField(null=True, blank=True)
    last_update_at = models.DateTimeField(null=True, blank=True)
    update_due_at = models.DateTimeField(null=True, blank=True)
    update_breached_at = models.DateTimeField(null=True, blank=True)
    # What opened it when the system did ("check:12", "deployment:40"): one open incident per
    # cause, so a flapping check adds entries to the incident it has instead of opening ten.
    cause = models.CharField(max_length=80, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    # Optimistic concurrency: every change adds one; a write that names an older one is a 409.
    version = models.PositiveIntegerField(default=1)

    objects = IncidentQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="uniq_incident_number"),
            models.UniqueConstraint(
                fields=["project", "cause"],
                condition=Q(status__in=["investigating", "identified", "monitoring"])
                & ~Q(cause=""),
                name="uniq_open_incident_per_cause",
            ),
        ]
        indexes = [
            models.Index(
                fields=["acknowledge_due_at"],
                name="incident_ack_due",
                condition=Q(
                    status__in=["investigating", "identified", "monitoring"],
                    acknowledged_at__isnull=True,
                ),
            ),
            models.Index(
                fields=["update_due_at"],
                name="incident_update_due",
                condition=Q(status__in=["investigating", "identified", "monitoring"]),
            ),
            models.Index(fields=["project", "status", "severity"], name="incident_list"),
        ]

    def __str__(self) -> str:
        return f"{self.reference} {self.title}"

    @property
    def reference(self) -> str:
        return f"INC-{self.number}"

    @property
    def topic(self) -> str:
        return f"incident:{self.pk}"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES

    def allowed_moves(self) -> list[str]:
        return list(self.TRANSITIONS[self.status])

    def delete(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        raise TypeError("Incidents are never deleted, only closed.")


class TimelineEntry(models.Model):
    """One line of an incident's own timeline: what a person wrote, or what happened to the
    incident (status, severity, acknowledgement, an SLA breach, a signal from a check)."""

    class Kind(models.TextChoices):
        # Written by people.
        NOTE = "note", "Note"
        UPDATE = "update", "Update to stakeholders"
        ACTION = "action", "Action taken"
        DECISION = "decision", "Decision"
        HYPOTHESIS = "hypothesis", "Hypothesis"
        # Recorded by Release Center about the incident itself.
        OPENED = "opened", "Opened"
        STATUS = "status", "Status change"
        SEVERITY = "severity", "Severity change"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        CHANGED = "changed", "Details changed"
        BREACH = "breach", "SLA breach"
        SIGNAL = "signal", "Signal"
        POSTMORTEM = "postmortem", "Postmortem"

    PERSON_KINDS = [Kind.NOTE, Kind.UPDATE, Kind.ACTION, Kind.DECISION, Kind.HYPOTHESIS]

    class Source(models.TextChoices):
        PERSON = "person", "Person"
        SYSTEM = "system", "System"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="entries")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.PERSON)
    text = models.TextField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # When it happened (may be backdated by its author); created_at is when it was written.
    occurred_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    edited_at = models.DateTimeField(null=True, blank=True)
    # What the entry is about, where it is not the incident itself: {"type", "id", "url"}.
    subject_type = models.CharField(max_length=40, blank=True, default="")
    subject_id = models.CharField(max_length=64, blank=True, default="")
    subject_url = models.CharField(max_length=300, blank=True, default="")
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["occurred_at", "id"]
        indexes = [
            models.Index(fields=["incident", "occurred_at", "id"], name="timeline_incident_time"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on {self.incident_id}: {self.text[:40]}"

    def delete(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        raise TypeError("Timeline entries are never deleted; their author may edit them.")


class IncidentSuggestion(models.Model):
    """What the system saw and proposes as an incident (policy "suggest"): one click opens it."""

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="incident_suggestions"
    )
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="incident_suggestions"
    )
    cause = models.CharField(max_length=80)
    title = models.CharField(max_length=200)
    severity = models.CharField(max_length=2, choices=Severity.choices)
    text = models.TextField(blank=True, default="")
    subject_url = models.CharField(max_length=300, blank=True, default="")
    service_ids = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Settled by opening it (incident) or dismissing it.
    incident = models.ForeignKey(
        Incident, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    dismissed_at = models.DateTimeField(null=True, blank=True)
    dismissed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "cause"],
                condition=Q(incident__isnull=True, dismissed_at__isnull=True),
                name="uniq_pending_suggestion_per_cause",
            ),
        ]

    def __str__(self) -> str:
        return self.title


class Postmortem(models.Model):
    """Prefilled from the record when the incident is resolved; people complete and review it.
    P0 and P1 incidents cannot be closed until it is reviewed."""

    incident = models.OneToOneField(Incident, on_delete=models.CASCADE, related_name="postmortem")
    summary = models.TextField(blank=True, default="")
    impact = models.TextField(blank=True, default="")
    # The record as it was at resolution (timeline, deployments, gates, skipped items, checks),
    # Markdown; regenerated if the incident is resolved again.
    record = models.TextField(blank=True, default="")
    root_cause = models.TextField(blank=True, default="")
    went_well = models.TextField(blank=True, default="")
    went_badly = models.TextField(blank=True, default="")
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    version = models.PositiveIntegerField(default=1)

    def __str__(self) -> str:
        return f"postmortem of {self.incident_id}"


class ActionItem(models.Model):
    postmortem = models.ForeignKey(Postmortem, on_delete=models.CASCADE, related_name="actions")
    text = models.CharField(max_length=500)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    due_date = models.DateField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["done_at", "due_date", "id"]
        indexes = [models.Index(fields=["due_date"], name="action_due", condition=Q(done_at=None))]

    def __str__(self) -> str:
        return self.text
