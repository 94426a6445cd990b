"""Health checks, smoke suites, their results and rollups, and what each environment allows.

A ``Check`` is one HTTP request with assertions. A smoke suite is a ``Check`` of kind SUITE whose
steps are child checks (``parent``) run in ``position`` order as one unit: the suite passes when
every step passes. Only top-level checks (plain checks and suites) are scheduled, have a state
and produce results; a step's outcome is kept in its suite's result (``details``).

The state (``status``) changes only through ``services`` with a compare-and-swap update, so two
workers that see the same failure write one event and one notification between them.

Reading the Health page never touches ``CheckResult``: current state is on the ``Check`` row and
uptime and sparklines come from ``CheckRollup`` (hourly and daily buckets, written in the same
transaction as the results).
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import urljoin, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from releasecenter.crypto import EncryptedTextField
from releasecenter.models import Environment, Project, Service

# Raw results are kept for result_retention_days() (settings.CHECK_RESULT_RETENTION_DAYS, 30 by
# default); hourly and daily rollups, which the uptime figures read, for ROLLUP_RETENTION_DAYS.
DEFAULT_RESULT_RETENTION_DAYS = 30
ROLLUP_RETENTION_DAYS = 366


def result_retention_days() -> int:
    """How many days raw check results are kept, from the settings at the time of asking.

    At least one day: the check page's response-time chart draws the last 24 hours of raw
    results. Uptime is unaffected, since it comes from the rollups.
    """
    value = getattr(settings, "CHECK_RESULT_RETENTION_DAYS", DEFAULT_RESULT_RETENTION_DAYS)
    try:
        days = int(value)
    except (TypeError, ValueError):
        raise ImproperlyConfigured(
            f"CHECK_RESULT_RETENTION_DAYS must be a whole number of days, not {value!r}."
        ) from None
    if isinstance(value, bool) or days < 1 or days != float(value):
        raise ImproperlyConfigured(
            f"CHECK_RESULT_RETENTION_DAYS must be a whole number of days, 1 or more, not {value!r}."
        )
    return days


MAX_TIMEOUT_SECONDS = 60.0
MIN_INTERVAL_SECONDS = 10
MAX_INTERVAL_SECONDS = 7 * 24 * 3600
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class EnvironmentMonitoring(models.Model):
    """What health checks of one environment may reach, and who hears about their failures.

    The allow-list opens addresses the guard refuses by default (loopback, private ranges):
    "127.0.0.1", "10.20.0.0/16", "127.0.0.1:8001", "status.internal". This app's own database
    and Redis stay refused whatever it says.
    """

    environment = models.OneToOneField(
        Environment, on_delete=models.CASCADE, related_name="monitoring"
    )
    allow_list = models.TextField(blank=True, default="")
    # Off for closed networks: then only allow-listed destinations are reachable at all.
    allow_public = models.BooleanField(default=True)
    contact_emails = models.TextField(blank=True, default="")
    # A Slack-compatible incoming webhook. Its URL is the credential, so it is encrypted.
    webhook_url = EncryptedTextField(blank=True, default="")
    # An HTTP proxy every HTTP check of the environment goes through: an admin's explicit choice
    # (a proxy connects on our behalf, past the guard), so the proxy's own address is judged by
    # the guard and the check page says a proxy is in use. May carry credentials: encrypted.
    proxy_url = EncryptedTextField(blank=True, default="")
    # A client certificate (PEM) for targets that require mutual TLS; the key is a secret.
    client_certificate = models.TextField(blank=True, default="")
    client_key = EncryptedTextField(blank=True, default="")
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"monitoring of {self.environment}"

    def proxy_origin(self) -> str:
        """The proxy as shown on pages: scheme, host and port, never its credentials."""
        if not self.proxy_url:
            return ""
        parts = urlsplit(self.proxy_url)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")

    def allow_entries(self) -> list[str]:
        return _lines(self.allow_list)

    def emails(self) -> list[str]:
        return _lines(self.contact_emails.replace(",", "\n"))


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


class Check(models.Model):
    class Kind(models.TextChoices):
        CHECK = "check", "Check"
        SUITE = "suite", "Smoke suite"

    class Status(models.TextChoices):
        UNKNOWN = "unknown", "Not run yet"
        PASSING = "passing", "Passing"
        FAILING = "failing", "Failing"

    S = Status
    TRANSITIONS: dict[str, set[str]] = {
        S.UNKNOWN: {S.PASSING, S.FAILING},
        S.PASSING: {S.FAILING},
        S.FAILING: {S.PASSING},
    }

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="checks")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="checks")
    service = models.ForeignKey(
        Service, null=True, blank=True, on_delete=models.CASCADE, related_name="checks"
    )

    class Probe(models.TextChoices):
        HTTP = "http", "HTTP"
        TCP = "tcp", "TCP port"
        HEARTBEAT = "heartbeat", "Heartbeat (pinged by a job)"

    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CHECK)
    # What a plain check does: an HTTP request, or a TCP connect to url "tcp://host:port"
    # (sending `body` as a line when given and waiting for a reply matching `expect`).
    probe = models.CharField(max_length=10, choices=Probe.choices, default=Probe.HTTP)
    expect = models.CharField(max_length=500, blank=True, default="")
    # A step of a smoke suite: run only as part of it, in position order.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="steps"
    )
    position = models.PositiveIntegerField(default=0)
    name = models.CharField(max_length=120)

    # The request. url is absolute, or a path joined to the environment's base URL, or empty
    # for the service's health path there.
    method = models.CharField(max_length=10, default="GET")
    url = models.CharField(max_length=2000, blank=True, default="")
    headers = models.JSONField(default=dict, blank=True)
    # JSON object of header name -> value, encrypted; only the names are ever shown back.
    secret_headers = EncryptedTextField(blank=True, default="")
    secret_header_names = models.JSONField(default=list, blank=True)
    body = models.TextField(blank=True, default="")
    assertions = models.JSONField(default=list, blank=True)
    timeout_seconds = models.FloatField(default=10.0)
    follow_redirects = models.BooleanField(default=False)

    # Scheduling: next_run_at advances by whole intervals from where it was (never from when a
    # run finished), so a schedule does not drift. Null interval: on demand only.
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    next_run_at = models.DateTimeField(null=True, blank=True)
    # Set by the dispatcher for the batch that will run this check; the task clears it, so a
    # redelivered task finds nothing left to run.
    dispatch_token = models.UUIDField(null=True, blank=True)
    # Set when someone asks for a run from the UI; cleared by the one task that does it.
    run_request_token = models.UUIDField(null=True, blank=True)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.UNKNOWN)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_passed = models.BooleanField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_latency_ms = models.FloatField(null=True, blank=True)
    last_summary = models.CharField(max_length=500, blank=True, default="")
    # The certificate the target served on its last HTTPS answer (the Health page lists those
    # expiring soon), and the TLS version negotiated.
    cert_not_after = models.DateTimeField(null=True, blank=True)
    cert_issuer = models.CharField(max_length=300, blank=True, default="")
    cert_names = models.JSONField(default=list, blank=True)
    tls_version = models.CharField(max_length=10, blank=True, default="")

    # Heartbeats (probe "heartbeat"): a job pings /ping/<ping_key>; the check is late when no
    # ping came by heartbeat_due_at (the next expected ping plus the grace). Expected every
    # heartbeat_period_seconds, or at the times of heartbeat_cron in heartbeat_timezone.
    ping_key = models.UUIDField(null=True, blank=True, unique=True)
    heartbeat_period_seconds = models.PositiveIntegerField(null=True, blank=True)
    heartbeat_grace_seconds = models.PositiveIntegerField(null=True, blank=True)
    heartbeat_cron = models.CharField(max_length=100, blank=True, default="")
    heartbeat_timezone = models.CharField(max_length=64, blank=True, default="UTC")
    last_ping_at = models.DateTimeField(null=True, blank=True)
    heartbeat_started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_due_at = models.DateTimeField(null=True, blank=True)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["environment__order", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "name"],
                condition=Q(parent__isnull=True),
                name="uniq_check_name_per_environment",
            ),
            models.UniqueConstraint(
                fields=["parent", "name"],
                condition=Q(parent__isnull=False),
                name="uniq_step_name_per_suite",
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_run_at"],
                name="check_due",
                condition=Q(enabled=True, interval_seconds__isnull=False, parent__isnull=True),
            ),
            models.Index(fields=["project", "environment", "service"], name="check_grid"),
            models.Index(
                fields=["heartbeat_due_at"],
                name="check_heartbeat_due",
                condition=Q(probe="heartbeat", enabled=True, heartbeat_due_at__isnull=False),
            ),
            models.Index(
                fields=["cert_not_after"],
                name="check_cert_expiry",
                condition=Q(cert_not_after__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def topic(self) -> str:
        return f"check:{self.pk}"

    @property
    def is_suite(self) -> bool:
        return self.kind == self.Kind.SUITE

    @property
    def is_step(self) -> bool:
        return self.parent_id is not None

    def resolved_url(self) -> str:
        """The URL the request goes to, or "" when it cannot be known (no base URL)."""
        url = self.url.strip()
        if self.probe == self.Probe.TCP:
            return url
        if url and not url.startswith("/"):
            return url  # absolute; a scheme other than http(s) is the guard's to refuse
        base = self.environment.base_url
        if not base:
            return ""
        if not url:
            if self.service is None:
                return ""
            url = self.service.health_path
        return urljoin(base.rstrip("/") + "/", url.lstrip("/"))

    def secret_header_values(self) -> dict[str, str]:
        if not self.secret_headers:
            return {}
        return json.loads(self.secret_headers)

    def request_headers(self) -> dict[str, str]:
        return {**(self.headers or {}), **self.secret_header_values()}

    def clean(self) -> None:
        if self.method not in METHODS:
            raise ValidationError({"method": f"Use one of {', '.join(METHODS)}."})
        if not 0 < self.timeout_seconds <= MAX_TIMEOUT_SECONDS:
            raise ValidationError(
                {
                    "timeout_seconds": f"A timeout is more than 0 and at most {MAX_TIMEOUT_SECONDS:g} s."
                }
            )
        if self.interval_seconds is not None and not (
            MIN_INTERVAL_SECONDS <= self.interval_seconds <= MAX_INTERVAL_SECONDS
        ):
            raise ValidationError(
                {
                    "interval_seconds": f"An interval is {MIN_INTERVAL_SECONDS} s to "
                    f"{MAX_INTERVAL_SECONDS // 86400} days."
                }
            )


class CheckResult(models.Model):
    """One run of a check or suite. Written in bulk; never updated."""

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        MANUAL = "manual", "Run now"
        API = "api", "API"
        DEPLOYMENT = "deployment", "Deployment"
        CHECKLIST = "checklist", "Checklist item"
        PING = "ping", "Ping"
        LATE = "late", "Ping overdue"

    # Indexed by result_check_time, whose first column it is.
    health_check = models.ForeignKey(
        Check, on_delete=models.CASCADE, related_name="results", db_index=False
    )
    started_at = models.DateTimeField()
    passed = models.BooleanField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    # A request that got no response: timeout, refused connection, address policy.
    error = models.TextField(blank=True, default="")
    # [{"message", "expected", "actual", "assertion", "step"?}]
    failures = models.JSONField(default=list, blank=True)
    excerpt = models.TextField(blank=True, default="")
    # Suites: one entry per step, in order.
    details = models.JSONField(default=list, blank=True)
    trigger = models.CharField(max_length=12, choices=Trigger.choices, default=Trigger.SCHEDULE)

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["health_check", "-started_at"], name="result_check_time"),
            # Retention deletes by age across all checks.
            models.Index(fields=["started_at"], name="result_time"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.health_check_id} {'passed' if self.passed else 'failed'} at {self.started_at}"
        )

    @property
    def summary(self) -> str:
        if self.error:
            return self.error
        if self.failures:
            return self.failures[0].get("message", "failed")
        return f"HTTP {self.status_code} in {self.latency_ms:.0f} ms" if self.latency_ms else "ok"


class PingInbox(models.Model):
    """A heartbeat ping received and not yet recorded (`heartbeats.drain`).

    The ping endpoint answers once its ping is here (one statement per batch of pings); the
    result, the rollups, the state change and any notification follow from this row shortly
    after, in bulk, in ping order. A row lives seconds at most.

    No foreign key constraint in the database: its check would take a KEY SHARE lock on the
    check's row for every ping taken in, and that waits for the FOR UPDATE with which the
    recording of earlier pings holds the same row (p95 of a ping 166 ms instead of a few). A
    row whose check was deleted meanwhile is dropped by the drain.
    """

    health_check = models.ForeignKey(
        Check,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    kind = models.CharField(max_length=8)  # success | start | fail
    body = models.BinaryField()  # at most heartbeats.EXCERPT_BYTES
    cut = models.BooleanField(default=False)
    received_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.health_check_id} {self.kind} at {self.received_at}"


class CheckRollup(models.Model):
    """Runs, failures and latency of one check per hour or per day.

    Written by the same transaction that stores results (an upsert that adds), read by the
    Health page, the targets and uptime; kept for a year after raw results are gone.
    """

    class Span(models.TextChoices):
        HOUR = "hour", "Hour"
        DAY = "day", "Day"

    # Indexed by the unique bucket constraint, whose first column it is.
    health_check = models.ForeignKey(
        Check, on_delete=models.CASCADE, related_name="rollups", db_index=False
    )
    span = models.CharField(max_length=4, choices=Span.choices)
    start = models.DateTimeField()
    runs = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    # Latency of the runs that got a response (a timeout has no meaningful latency).
    latency_count = models.PositiveIntegerField(default=0)
    latency_sum_ms = models.FloatField(default=0.0)
    latency_max_ms = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["health_check", "span", "start"], name="uniq_rollup_bucket"
            ),
        ]
        # The Health page reads a day of hourly buckets for a hundred checks at a time; on
        # PostgreSQL the unique constraint's index includes the counters (migration 0009), so
        # that is an index-only scan and an upsert maintains one index on the bucket, not two.
        # It is not declared here because other databases cannot include columns.
        indexes = [models.Index(fields=["span", "start"], name="rollup_span_start")]

    def __str__(self) -> str:
        return f"{self.health_check_id} {self.span} {self.start}"


class PerformanceTarget(models.Model):
    """A metric of an environment's checks with a target and an alert threshold.

    Evaluated over the hourly rollups of the environment's checks. Above the target it is a
    warning shown on the Health page; above the alert threshold it is breached, which shows on
    the project overview and notifies the environment's contacts once per breach.
    """

    class Metric(models.TextChoices):
        RESPONSE_TIME_AVG = "response_time_avg", "Response time, average"
        RESPONSE_TIME_MAX = "response_time_max", "Response time, slowest"
        ERROR_RATE = "error_rate", "Error rate"

    class Status(models.TextChoices):
        UNKNOWN = "unknown", "No data"
        OK = "ok", "Meets target"
        WARNING = "warning", "Above target"
        BREACHED = "breached", "Breached"

    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="performance_targets"
    )
    metric = models.CharField(max_length=20, choices=Metric.choices)
    target = models.FloatField()
    alert_threshold = models.FloatField()
    window_hours = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.UNKNOWN)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    last_value = models.FloatField(null=True, blank=True)
    evaluated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["environment", "metric"]
        constraints = [
            models.UniqueConstraint(fields=["environment", "metric"], name="uniq_target_metric"),
        ]

    def __str__(self) -> str:
        return f"{self.get_metric_display()} in {self.environment}"

    @property
    def unit(self) -> str:
        return "%" if self.metric == self.Metric.ERROR_RATE else " ms"

    def clean(self) -> None:
        if self.target < 0 or self.alert_threshold < 0:
            raise ValidationError("Targets and thresholds are not negative.")
        if self.alert_threshold < self.target:
            raise ValidationError(
                {"alert_threshold": "The alert threshold is at or above the target."}
            )
        if self.metric == self.Metric.ERROR_RATE and self.alert_threshold > 100:
            raise ValidationError({"alert_threshold": "An error rate is a percentage."})
        if not 1 <= self.window_hours <= 168:
            raise ValidationError({"window_hours": "A window is 1 to 168 hours."})


class Notification(models.Model):
    """One message to an environment's contacts (webhook and email), written in the same
    transaction as the change of state it reports; a task delivers it.

    ``claim_token`` makes delivery safe to run twice: a worker claims the row with a conditional
    update before sending, and each channel is marked done as soon as it succeeded, so a retry
    sends only what is still missing.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "No contacts"

    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="monitoring_notifications"
    )
    health_check = models.ForeignKey(
        Check, null=True, blank=True, on_delete=models.SET_NULL, related_name="notifications"
    )
    target = models.ForeignKey(
        PerformanceTarget,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="notifications",
    )
    event = models.CharField(max_length=40)
    subject = models.CharField(max_length=200)
    text = models.TextField()
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    claim_token = models.UUIDField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    webhook_done = models.BooleanField(default=False)
    email_done = models.BooleanField(default=False)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.subject


def new_token() -> uuid.UUID:
    return uuid.uuid4()


# Incident response lives in its own module; importing it here registers its models.
from .incidents.models import *  # noqa: E402, F403

# On-call, channels and the status page live in their own module; imported here so that the
# app's migrations and admin find them.
from .oncall.models import (  # noqa: E402, F401
    ChannelMessage,
    DeliveryAttempt,
    EscalationLevel,
    EscalationPage,
    NotificationChannel,
    PublicIncident,
    PublicUpdate,
    Schedule,
    ScheduleMember,
    ScheduleOverride,
    StatusDay,
    StatusGroup,
    StatusPage,
)
