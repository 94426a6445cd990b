"""Checklists: versioned runbook templates, runs of them, per-item state and evidence.

A template never changes in place. Every edit (and every import) writes a new TemplateVersion
with its own Section and Item rows, and the template points at its current version; a Run keeps
the version it started from, so a run in progress never sees its steps move under it.

A run has one RunItem per item of its version (sub-items included). RunItem.version counts the
changes of that row: writers send the version they saw and a stale one is refused as a
conflict, so two people changing the same item never silently overwrite each other.
"""

from __future__ import annotations

import uuid
from pathlib import PurePosixPath

from django.conf import settings
from django.db import models
from django.utils import timezone

from releasecenter.models import Environment, Project

# RecurringSchedule has a field named "timezone"; inside its class body that name is the field.
_now = timezone.now


class Severity(models.TextChoices):
    NONE = "none", "None"
    WARNING = "warning", "Warning"
    CONDITIONAL = "conditional", "Conditional"
    NO_GO = "no-go", "NO-GO"


class ChecklistTemplate(models.Model):
    """A runbook a team works through, e.g. "Production deployment runbook"."""

    class Kind(models.TextChoices):
        PRE_DEPLOYMENT = "pre-deployment", "Pre-deployment"
        DEPLOYMENT_DAY = "deployment-day", "Deployment day"
        POST_DEPLOYMENT = "post-deployment", "Post-deployment"
        ROLLBACK = "rollback", "Rollback"
        RECURRING = "recurring", "Recurring"
        OTHER = "other", "Other"

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="checklist_templates"
    )
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.OTHER)
    current_version = models.ForeignKey(
        "TemplateVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    # Runs keep their versions, so a template is archived rather than deleted; an archived
    # template frees its name and starts no new runs.
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name"],
                condition=models.Q(archived_at__isnull=True),
                name="uniq_active_template_name",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class TemplateVersion(models.Model):
    class Source(models.TextChoices):
        IMPORT = "import", "Imported"
        EDIT = "edit", "Edited"
        CREATE = "create", "Created"

    template = models.ForeignKey(
        ChecklistTemplate, on_delete=models.CASCADE, related_name="versions"
    )
    number = models.PositiveIntegerField()
    # The runbook's own title (its first heading or front matter), kept for the export.
    title = models.CharField(max_length=300, blank=True, default="")
    signoff_roles = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.EDIT)
    summary = models.CharField(max_length=300, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["template", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["template", "number"], name="uniq_template_version"),
        ]

    def __str__(self) -> str:
        return f"{self.template} v{self.number}"


class Section(models.Model):
    """A heading of the runbook. ``position`` is the pre-order index within the version, so
    ordering by it gives document order; ``depth`` is the nesting below the top."""

    version = models.ForeignKey(TemplateVersion, on_delete=models.CASCADE, related_name="sections")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    position = models.PositiveIntegerField()
    depth = models.PositiveSmallIntegerField(default=0)
    # The Markdown heading level it came from (0: text before the first heading).
    level = models.PositiveSmallIntegerField(default=2)
    title = models.TextField(blank=True, default="")
    # Prose, tables and plain lists of the section, as Markdown.
    notes = models.TextField(blank=True, default="")
    # Fenced blocks that precede any item: [{"language": "bash", "code": "..."}].
    commands = models.JSONField(default=list, blank=True)
    # The heading's own severity and phase; items carry the effective values.
    severity = models.CharField(max_length=12, choices=Severity.choices, default=Severity.NONE)
    due_offset_minutes = models.IntegerField(null=True, blank=True)

    class Meta:
        ordering = ["version", "position"]
        indexes = [models.Index(fields=["version", "position"], name="section_version_pos")]

    def __str__(self) -> str:
        return self.title or "(untitled section)"


class Item(models.Model):
    """A step of the runbook (a ``- [ ]`` line); sub-items have a parent item."""

    version = models.ForeignKey(TemplateVersion, on_delete=models.CASCADE, related_name="items")
    section = models.ForeignKey(Section, on_delete=models.CASCADE, related_name="items")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    # Pre-order index within the whole version (sections in order, then their items).
    position = models.PositiveIntegerField()
    depth = models.PositiveSmallIntegerField(default=0)
    text = models.TextField()
    details = models.TextField(blank=True, default="")
    commands = models.JSONField(default=list, blank=True)
    # The label the runbook wrote right above the item's list ("For Production:"), shown
    # above the first item of the group so the items keep the words that frame them.
    group_label = models.CharField(max_length=200, blank=True, default="")
    severity = models.CharField(max_length=12, choices=Severity.choices, default=Severity.NONE)
    owner_role = models.CharField(max_length=80, blank=True, default="")
    # Minutes relative to the planned start: -120 is "T-2 hours", 15 is "T+15 minutes".
    due_offset_minutes = models.IntegerField(null=True, blank=True)
    evidence_required = models.BooleanField(default=False)
    pre_checked = models.BooleanField(default=False)
    # An automated check that can tick the item, e.g. {"kind": "check", "check_id": 12};
    # see checklists.automation.
    automation = models.JSONField(null=True, blank=True)
    # Whether a tick still holds when the release moves to another commit. None: by kind (a
    # gate is proof about one build and reopens, a plain step keeps its tick); True: keeps
    # its tick (e.g. "book the change window"); False: reopens even without a severity.
    independent_of_build = models.BooleanField(null=True, blank=True)

    class Meta:
        ordering = ["version", "position"]
        indexes = [models.Index(fields=["version", "position"], name="item_version_pos")]

    def __str__(self) -> str:
        return self.text[:80]

    @property
    def reopens_on_new_build(self) -> bool:
        if self.independent_of_build is not None:
            return not self.independent_of_build
        return self.severity != Severity.NONE


class RecurringSchedule(models.Model):
    """Beat opens a run of the template for the environment at each occurrence."""

    class Frequency(models.TextChoices):
        DAILY = "daily", "Daily"
        WEEKLY = "weekly", "Weekly"
        MONTHLY = "monthly", "Monthly"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    template = models.ForeignKey(
        ChecklistTemplate, on_delete=models.CASCADE, related_name="schedules"
    )
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    frequency = models.CharField(max_length=10, choices=Frequency.choices)
    timezone = models.CharField(max_length=64, default="UTC")
    time_of_day = models.TimeField()
    # Weekly: 0 is Monday. Monthly: 1 to 28, so every month has the day.
    weekday = models.PositiveSmallIntegerField(null=True, blank=True)
    day_of_month = models.PositiveSmallIntegerField(null=True, blank=True)
    # A run not completed this long after its start is missed.
    deadline_minutes = models.PositiveIntegerField(default=8 * 60)
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=_now)

    class Meta:
        ordering = ["template", "environment", "id"]

    def __str__(self) -> str:
        return f"{self.template} in {self.environment.name}, {self.get_frequency_display()}"


class Run(models.Model):
    """One pass through a template version, standalone, for a release, or recurring."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        COMPLETED = "completed", "Completed"

    # Completion follows the items: the last item done or N/A completes the run, and an item
    # opened again reopens it.
    TRANSITIONS = {Status.OPEN: {Status.COMPLETED}, Status.COMPLETED: {Status.OPEN}}

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="checklist_runs")
    # RESTRICT: a template or version with runs cannot be deleted on its own (runs are records),
    # but deleting the whole project takes its runs along.
    template = models.ForeignKey(ChecklistTemplate, on_delete=models.RESTRICT, related_name="runs")
    template_version = models.ForeignKey(
        TemplateVersion, on_delete=models.RESTRICT, related_name="runs"
    )
    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    title = models.CharField(max_length=300)
    # Due times of items are offsets from this.
    planned_start = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    # Recurring runs: the schedule that opened it, and the time by which it must be completed.
    schedule = models.ForeignKey(
        RecurringSchedule, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    deadline = models.DateTimeField(null=True, blank=True)
    # Set by beat once, when the deadline passed with the run still open.
    missed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Beat may run twice for one occurrence; the second insert fails and is ignored.
            models.UniqueConstraint(
                fields=["schedule", "planned_start"],
                condition=models.Q(schedule__isnull=False),
                name="uniq_recurring_occurrence",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "-created_at"], name="run_project_created"),
            models.Index(fields=["project", "deadline"], name="run_project_deadline"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def topic(self) -> str:
        return f"run:{self.pk}"

    @property
    def is_missed(self) -> bool:
        if self.deadline is None:
            return False
        done = self.completed_at
        return (done is None and timezone.now() > self.deadline) or (
            done is not None and done > self.deadline
        )


class RunItem(models.Model):
    class State(models.TextChoices):
        OPEN = "open", "Open"
        DONE = "done", "Done"
        NA = "na", "N/A"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="items")
    item = models.ForeignKey(Item, on_delete=models.RESTRICT, related_name="+")
    state = models.CharField(max_length=4, choices=State.choices, default=State.OPEN)
    na_reason = models.CharField(max_length=500, blank=True, default="")
    note = models.TextField(blank=True, default="")
    done_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    done_at = models.DateTimeField(null=True, blank=True)
    # Who changed anything of this row last, and when (state, note, evidence).
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_at = models.DateTimeField(null=True, blank=True)
    # Optimistic concurrency: +1 on every change; a writer that saw another number is refused.
    version = models.PositiveIntegerField(default=1)
    # The last automated check of this item, when it has one.
    automation_passed = models.BooleanField(null=True, blank=True)
    automation_summary = models.CharField(max_length=500, blank=True, default="")
    automation_at = models.DateTimeField(null=True, blank=True)
    # When the item's check was last handed to a worker without anyone asking (the run opened,
    # or its phase began): beat queues it once per phase.
    automation_queued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "item"], name="uniq_run_item"),
        ]
        indexes = [models.Index(fields=["run", "state"], name="runitem_run_state")]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.pk} {self.state}"

    @property
    def key(self) -> str:
        """The stable key other apps (gates, acceptances) use for this item of this run."""
        return str(self.pk)


def evidence_upload_to(instance: Evidence, filename: str) -> str:
    # A random folder per upload: names never collide and are not guessable from the run.
    safe = PurePosixPath(filename.replace("\\", "/")).name[:120] or "evidence"
    return f"evidence/{instance.run.project_id}/{instance.run_id}/{uuid.uuid4().hex}/{safe}"


class Evidence(models.Model):
    """Proof attached to a run item: an uploaded file, a link, or the text an automated check
    answered with."""

    class Kind(models.TextChoices):
        FILE = "file", "File"
        LINK = "link", "Link"
        TEXT = "text", "Check response"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="evidence")
    run_item = models.ForeignKey(RunItem, on_delete=models.CASCADE, related_name="evidence")
    kind = models.CharField(max_length=4, choices=Kind.choices)
    file = models.FileField(upload_to=evidence_upload_to, max_length=500, blank=True)
    name = models.CharField(max_length=255)
    content_type = models.CharField(max_length=100, blank=True, default="")
    size = models.PositiveBigIntegerField(default=0)
    url = models.URLField(max_length=2000, blank=True, default="")
    text = models.TextField(blank=True, default="")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    uploaded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["run_item", "uploaded_at", "id"]

    def __str__(self) -> str:
        return self.name
