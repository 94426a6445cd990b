"""Releases, their target environments, the environment policies that gate them, sign-offs, risk
acceptances, acknowledgements, overrides and environment locks."""

from __future__ import annotations

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from releasecenter.models import Environment, Project

__all__ = [
    "EnvironmentLock",
    "EnvironmentPolicy",
    "FollowUp",
    "Override",
    "Release",
    "ReleaseTarget",
    "RiskAcceptance",
    "Signoff",
    "SignoffRequirement",
    "TimeWindow",
    "WarningAcknowledgement",
]

commit_validator = RegexValidator(
    r"^[0-9a-f]{7,64}$", "A commit SHA is 7 to 64 lowercase hexadecimal characters."
)
version_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$",
    "A version is up to 64 letters, digits, '.', '_', '+' or '-', starting with a letter or digit.",
)


class Release(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="releases")
    version = models.CharField(max_length=64, validators=[version_validator])
    commit_sha = models.CharField(max_length=64, validators=[commit_validator])
    notes = models.TextField(blank=True, default="")
    planned_start = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # Bumped whenever the version or commit changes; sign-offs given on an older revision are stale.
    revision = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "version"], name="uniq_release_version"),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug} {self.version}"

    @property
    def topic(self) -> str:
        return f"release:{self.pk}"


class ReleaseTarget(models.Model):
    """A release's journey through one environment."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        IN_REVIEW = "in_review", "In review"
        APPROVED = "approved", "Approved"
        DEPLOYING = "deploying", "Deploying"
        DEPLOYED = "deployed", "Deployed"
        VERIFIED = "verified", "Verified"
        BLOCKED = "blocked", "Blocked"
        FAILED = "failed", "Failed"
        ROLLED_BACK = "rolled_back", "Rolled back"
        CANCELLED = "cancelled", "Cancelled"

    S = Status
    TRANSITIONS: dict[str, set[str]] = {
        S.DRAFT: {S.IN_REVIEW, S.CANCELLED},
        S.IN_REVIEW: {S.APPROVED, S.BLOCKED, S.DRAFT, S.CANCELLED, S.DEPLOYING},
        S.APPROVED: {S.IN_REVIEW, S.BLOCKED, S.DEPLOYING, S.CANCELLED},
        S.BLOCKED: {S.IN_REVIEW, S.APPROVED, S.CANCELLED, S.DEPLOYING},
        # A cancelled deployment returns the release to review, where approval follows its
        # gates and sign-offs again; cancelling the release itself is a separate decision.
        S.DEPLOYING: {S.DEPLOYED, S.FAILED, S.CANCELLED, S.ROLLED_BACK, S.IN_REVIEW},
        # A new commit sends a deployed or verified release back to review: the proof was
        # about another build (see services.releases.update_release).
        S.DEPLOYED: {S.VERIFIED, S.FAILED, S.ROLLED_BACK, S.DEPLOYING, S.IN_REVIEW},
        S.VERIFIED: {S.ROLLED_BACK, S.DEPLOYING, S.IN_REVIEW},
        S.FAILED: {S.DEPLOYING, S.ROLLED_BACK, S.IN_REVIEW, S.CANCELLED},
        S.ROLLED_BACK: {S.DEPLOYING, S.IN_REVIEW, S.CANCELLED},
        S.CANCELLED: set(),
    }
    # The statuses in which approval follows the gates and sign-offs automatically.
    REVIEW_STATES = {S.IN_REVIEW, S.APPROVED, S.BLOCKED}

    release = models.ForeignKey(Release, on_delete=models.CASCADE, related_name="targets")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    status_changed_at = models.DateTimeField(default=timezone.now)
    # One timestamp per milestone; the audit log keeps every transition.
    in_review_at = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    deploying_at = models.DateTimeField(null=True, blank=True)
    deployed_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    # The commit the release's last successful rollout here ran: "verified" holds for that commit
    # only, and a change of the release's commit clears it.
    deployed_commit = models.CharField(max_length=64, blank=True, default="")
    # Checklist runs attached to this release in this environment (see checklists.Run).
    runs = models.ManyToManyField("checklists.Run", blank=True, related_name="release_targets")

    class Meta:
        ordering = ["release", "environment__order", "environment__name"]
        constraints = [
            models.UniqueConstraint(fields=["release", "environment"], name="uniq_release_target"),
        ]

    def __str__(self) -> str:
        return f"{self.release} → {self.environment.name} ({self.status})"

    @property
    def topic(self) -> str:
        return f"release:{self.release_id}"

    def can_move_to(self, status: str) -> bool:
        return status in self.TRANSITIONS[self.status]


class EnvironmentPolicy(models.Model):
    """What a release must satisfy before it may deploy to an environment."""

    class IncidentRule(models.TextChoices):
        OFF = "", "Do not block on incidents"
        # "P_n" blocks while an incident of P_n or worse is open in the environment.
        P0 = "P0", "Block while a P0 incident is open"
        P1 = "P1", "Block while a P1 or worse (P0) incident is open"
        P2 = "P2", "Block while a P2 or worse incident is open"
        P3 = "P3", "Block while a P3 or worse incident is open"
        P4 = "P4", "Block while any incident is open"

    environment = models.OneToOneField(Environment, on_delete=models.CASCADE, related_name="policy")
    # The checklists a release gets for this environment: runs are opened when it is targeted.
    checklist_templates = models.ManyToManyField(
        "checklists.ChecklistTemplate", blank=True, related_name="+"
    )
    min_notice = models.DurationField(
        null=True, blank=True, help_text="Minimum time between approval and planned start."
    )
    require_previous_verified = models.BooleanField(default=False)
    block_on_incidents = models.CharField(
        max_length=4, choices=IncidentRule.choices, blank=True, default=IncidentRule.P1
    )
    auto_rollback = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"policy of {self.environment}"


class SignoffRequirement(models.Model):
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="signoff_requirements"
    )
    role = models.CharField(max_length=80)
    quorum = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(10)]
    )

    class Meta:
        ordering = ["environment", "id"]
        constraints = [
            models.UniqueConstraint(fields=["environment", "role"], name="uniq_signoff_role"),
        ]

    def __str__(self) -> str:
        return f"{self.role} ×{self.quorum}"


class TimeWindow(models.Model):
    """A freeze or maintenance window of an environment, in a time zone: weekly recurring (e.g.
    a freeze from Friday 16:00 to Monday 08:00 Europe/Berlin), or one-off between two dates
    (a holiday freeze from 20 December to 5 January)."""

    class Kind(models.TextChoices):
        FREEZE = "freeze", "Freeze"
        MAINTENANCE = "maintenance", "Maintenance window"

    WEEKDAYS = [
        (i, d)
        for i, d in enumerate(
            ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
        )
    ]
    WEEKLY_FIELDS = ("start_weekday", "start_time", "end_weekday", "end_time")

    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="time_windows"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    label = models.CharField(max_length=80, blank=True, default="")
    # Weekly windows: wall-clock weekday and time in ``timezone``.
    start_weekday = models.PositiveSmallIntegerField(choices=WEEKDAYS, null=True, blank=True)
    start_time = models.TimeField(null=True, blank=True)
    end_weekday = models.PositiveSmallIntegerField(choices=WEEKDAYS, null=True, blank=True)
    end_time = models.TimeField(null=True, blank=True)
    # One-off windows: two moments; ``timezone`` is the zone they were given in and are shown in.
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")

    class Meta:
        ordering = ["environment", "kind", "starts_at", "start_weekday", "start_time"]

    def __str__(self) -> str:
        return self.label or f"{self.get_kind_display()} {self.describe()}"

    @property
    def dated(self) -> bool:
        return self.starts_at is not None

    def describe(self) -> str:
        if self.dated:
            zone = zoneinfo.ZoneInfo(self.timezone)
            start, end = self.starts_at.astimezone(zone), self.ends_at.astimezone(zone)
            return f"{start:%a %Y-%m-%d %H:%M} – {end:%a %Y-%m-%d %H:%M} {self.timezone}"
        days = dict(self.WEEKDAYS)
        return (
            f"every {days[self.start_weekday][:3]} {self.start_time:%H:%M} – "
            f"{days[self.end_weekday][:3]} {self.end_time:%H:%M} {self.timezone}"
        )

    def clean(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValidationError({"timezone": f"Unknown time zone '{self.timezone}'."}) from exc
        if self.starts_at is not None or self.ends_at is not None:
            self._clean_dated()
        else:
            self._clean_weekly()

    def _clean_dated(self) -> None:
        if self.starts_at is None or self.ends_at is None:
            field = "starts_at" if self.starts_at is None else "ends_at"
            raise ValidationError({field: "A dated window needs both its start and its end."})
        if timezone.is_naive(self.starts_at) or timezone.is_naive(self.ends_at):
            raise ValidationError("Give a dated window's start and end with their time zone.")
        if self.ends_at <= self.starts_at:
            raise ValidationError({"ends_at": "A window must end after it starts."})
        if any(getattr(self, f) is not None for f in self.WEEKLY_FIELDS):
            raise ValidationError("A window is either weekly or dated, not both.")

    def _clean_weekly(self) -> None:
        missing = [f for f in self.WEEKLY_FIELDS if getattr(self, f) is None]
        if missing:
            raise ValidationError(
                {missing[0]: "Give a weekly window's days and times, or a dated window's dates."}
            )
        if (self.start_weekday, self.start_time) == (self.end_weekday, self.end_time):
            raise ValidationError("A window must not start and end at the same moment.")


class Signoff(models.Model):
    class Decision(models.TextChoices):
        APPROVE = "approve", "Approve"
        REJECT = "reject", "Reject"

    target = models.ForeignKey(ReleaseTarget, on_delete=models.CASCADE, related_name="signoffs")
    role = models.CharField(max_length=80)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    comment = models.TextField(blank=True, default="")
    release_revision = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    stale_at = models.DateTimeField(null=True, blank=True)
    stale_reason = models.CharField(max_length=200, blank=True, default="")
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["target", "created_at", "id"]
        constraints = [
            # One person fills at most one role per release and environment. The database
            # enforces it, so two concurrent sign-offs by the same person cannot both land.
            models.UniqueConstraint(
                fields=["target", "user"],
                condition=Q(stale_at__isnull=True, withdrawn_at__isnull=True),
                name="one_active_signoff_per_person",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.decision} as {self.role}"

    @property
    def active(self) -> bool:
        return self.stale_at is None and self.withdrawn_at is None


class RiskAcceptance(models.Model):
    """A lead accepts an unticked CONDITIONAL gate for production, with a reason, until expiry."""

    target = models.ForeignKey(
        ReleaseTarget, on_delete=models.CASCADE, related_name="risk_acceptances"
    )
    item_key = models.CharField(max_length=40)
    item_text = models.TextField()
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    reason = models.TextField()
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["target", "created_at"]

    def __str__(self) -> str:
        return f"risk accepted: {self.item_text[:60]}"


class WarningAcknowledgement(models.Model):
    target = models.ForeignKey(
        ReleaseTarget, on_delete=models.CASCADE, related_name="acknowledgements"
    )
    item_key = models.CharField(max_length=40)
    item_text = models.TextField()
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["target", "created_at"]
        constraints = [
            models.UniqueConstraint(fields=["target", "item_key"], name="uniq_warning_ack"),
        ]

    def __str__(self) -> str:
        return f"acknowledged: {self.item_text[:60]}"


class Override(models.Model):
    """Break-glass: a lead went ahead despite a no-go. Shown in red on the release for good."""

    target = models.ForeignKey(ReleaseTarget, on_delete=models.CASCADE, related_name="overrides")
    overridden_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    reason = models.TextField()
    # The reasons the decision gave at that moment, as they were.
    reasons = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["target", "created_at"]

    def __str__(self) -> str:
        return f"override: {self.reason[:60]}"


class FollowUp(models.Model):
    """A review item on a release, e.g. the review every override must get afterwards."""

    release = models.ForeignKey(Release, on_delete=models.CASCADE, related_name="follow_ups")
    text = models.TextField()
    override = models.OneToOneField(
        Override, null=True, blank=True, on_delete=models.CASCADE, related_name="follow_up"
    )
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    resolution = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["release", "created_at"]

    def __str__(self) -> str:
        return self.text[:80]


class EnvironmentLock(models.Model):
    """A manual lock: nothing deploys to the environment while it is held."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="locks")
    reason = models.TextField()
    locked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    locked_at = models.DateTimeField(default=timezone.now)
    released_at = models.DateTimeField(null=True, blank=True)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    release_reason = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["environment", "-locked_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment"],
                condition=Q(released_at__isnull=True),
                name="one_active_lock_per_environment",
            ),
        ]

    def __str__(self) -> str:
        return f"lock on {self.environment_id}: {self.reason[:60]}"
