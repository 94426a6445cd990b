"""Deployment jobs: how an environment is reached (DeployTarget), the deployments themselves, their
per-service steps and log, and what runs where (DeployedVersion).

A Deployment has one status with an explicit transition table. The worker that runs it owns it
through a fencing token: every write of the runner is conditional on the token it claimed with,
so a redelivered task, or a worker the reaper declared lost, cannot write over the record.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from releasecenter.crypto import EncryptedTextField
from releasecenter.models import Environment, Project, Service

from .releases import Override, Release

__all__ = [
    "DeployTarget",
    "DeployedVersion",
    "Deployment",
    "DeploymentLogLine",
    "DeploymentStep",
]


class DeployTarget(models.Model):
    """How deployments reach one environment: the strategy, its connection and how to verify.

    Secrets (bearer token, kubeconfig, webhook secret) are stored encrypted and never shown back;
    forms and the API say only whether each is set.
    """

    class Strategy(models.TextChoices):
        KUBERNETES = "kubernetes", "Kubernetes"
        WEBHOOK = "webhook", "Webhook"
        EXTERNAL = "external", "External (reported by CI)"

    environment = models.OneToOneField(
        Environment, on_delete=models.CASCADE, related_name="deploy_target"
    )
    strategy = models.CharField(
        max_length=20, choices=Strategy.choices, default=Strategy.KUBERNETES
    )
    # Kubernetes: the API server and either a bearer token or a whole kubeconfig.
    api_url = models.URLField(blank=True, default="", help_text="e.g. https://k8s.example:6443")
    bearer_token = EncryptedTextField(blank=True, default="")
    kubeconfig = EncryptedTextField(blank=True, default="")
    ca_certificate = models.TextField(
        blank=True, default="", help_text="PEM of the API server's CA (not secret)."
    )
    verify_tls = models.BooleanField(default=True)
    namespace = models.CharField(max_length=63, default="default")
    # {service name: Deployment name}; a service not listed deploys to the Deployment of its name.
    deployment_names = models.JSONField(default=dict, blank=True)
    # Where a service's health endpoint is: "{namespace}", "{deployment}" and "{service}" are
    # filled in and the service's health path is appended. Empty: the environment's base URL.
    health_url_template = models.CharField(max_length=500, blank=True, default="")
    # Address-policy entries verification may reach besides public addresses, one per line
    # (e.g. "10.20.0.0/16", "127.0.0.1:8001").
    verify_allow_list = models.TextField(blank=True, default="")
    verify_timeout_seconds = models.PositiveIntegerField(default=60)
    rollout_timeout_seconds = models.PositiveIntegerField(default=600)
    # Webhook: POSTed with an HMAC signature; the status URL is polled ("{deployment_id}").
    webhook_url = models.URLField(blank=True, default="")
    webhook_status_url = models.CharField(max_length=500, blank=True, default="")
    webhook_secret = EncryptedTextField(blank=True, default="")
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"{self.get_strategy_display()} target of {self.environment}"

    def deployment_name(self, service_name: str) -> str:
        return (self.deployment_names or {}).get(service_name) or service_name

    def health_url(self, service: Service) -> str:
        base = self.health_url_template
        if base:
            base = base.format(
                namespace=self.namespace,
                deployment=self.deployment_name(service.name),
                service=service.name,
            )
        else:
            base = self.environment.base_url
        if not base:
            return ""
        return base.rstrip("/") + service.health_path

    def allow_list(self) -> list[str]:
        return [line.strip() for line in self.verify_allow_list.splitlines() if line.strip()]

    def clean(self) -> None:
        try:
            self.health_url_template.format(namespace="n", deployment="d", service="s")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValidationError(
                {
                    "health_url_template": "Use only {namespace}, {deployment} and {service} as "
                    "placeholders."
                }
            ) from exc
        if not isinstance(self.deployment_names, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.deployment_names.items()
        ):
            raise ValidationError({"deployment_names": "Map service names to Deployment names."})


class Deployment(models.Model):
    """One run of a release (or of a rollback) against one environment."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        ROLLING_BACK = "rolling_back", "Rolling back"
        ROLLED_BACK = "rolled_back", "Rolled back"

    class Kind(models.TextChoices):
        DEPLOY = "deploy", "Deploy"
        ROLLBACK = "rollback", "Rollback"

    S = Status
    TRANSITIONS: dict[str, set[str]] = {
        S.QUEUED: {S.RUNNING, S.CANCELLED, S.FAILED},
        S.RUNNING: {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.ROLLING_BACK},
        # A finished deployment that changed something can be undone by a rollback deployment;
        # while that runs, this one is "rolling back".
        S.SUCCEEDED: {S.ROLLING_BACK},
        S.FAILED: {S.ROLLING_BACK},
        S.CANCELLED: {S.ROLLING_BACK},
        S.ROLLING_BACK: {S.ROLLED_BACK, S.FAILED},
        S.ROLLED_BACK: set(),
    }
    # The database allows one of these per environment (see Meta.constraints).
    ACTIVE = (S.QUEUED, S.RUNNING)
    FINISHED = (S.SUCCEEDED, S.FAILED, S.CANCELLED, S.ROLLED_BACK)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="deployments")
    release = models.ForeignKey(Release, on_delete=models.CASCADE, related_name="deployments")
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="deployments"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.DEPLOY)
    strategy = models.CharField(max_length=20, choices=DeployTarget.Strategy.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    # The version the services should run when this deployment is done, and the release's
    # commit at the moment it was requested (what the proof of this deployment is about).
    version = models.CharField(max_length=64)
    commit_sha = models.CharField(max_length=64, blank=True, default="")
    # The go/no-go decision as it was when the deployment was requested, with every reason
    # (an override's reasons included): {"decision", "reasons", "at", "commit", "overridden"}.
    decision_snapshot = models.JSONField(default=dict, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    override = models.ForeignKey(
        Override, null=True, blank=True, on_delete=models.SET_NULL, related_name="deployments"
    )
    # The last successful deployment to the environment when this one was requested.
    replaces = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replaced_by"
    )
    # For a rollback: the deployment it undoes.
    rollback_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="rollbacks"
    )
    reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    status_changed_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # Ownership by a worker: who runs it, since when it is known alive, and the fencing token
    # every write of that worker is conditional on.
    owner = models.CharField(max_length=200, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    fencing_token = models.PositiveBigIntegerField(default=0)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Storage name of the YAML snapshot of the environment taken before applying.
    snapshot_path = models.CharField(max_length=300, blank=True, default="")
    idempotency_key = models.CharField(max_length=200, blank=True, default="")
    idempotency_fingerprint = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["-id"]
        constraints = [
            # The lock that matters: two requests racing for one environment cannot both insert.
            models.UniqueConstraint(
                fields=["environment"],
                condition=Q(status__in=["queued", "running"]),
                name="one_active_deployment_per_environment",
            ),
            models.UniqueConstraint(
                fields=["requested_by", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="uniq_deployment_idempotency_key",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "-id"], name="deployment_project_id"),
            models.Index(fields=["environment", "-id"], name="deployment_environment_id"),
            models.Index(fields=["status", "heartbeat_at"], name="deployment_status_heartbeat"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.version} to {self.environment_id} ({self.status})"

    @property
    def topic(self) -> str:
        return f"deployment:{self.pk}"

    @property
    def active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED

    def can_move_to(self, status: str) -> bool:
        return status in self.TRANSITIONS[self.status]

    @property
    def took(self) -> str:
        """How long it ran, for people: "42 s", "3 min 5 s"; empty until it has run."""
        if self.started_at is None or self.finished_at is None:
            return ""
        seconds = max(0, round((self.finished_at - self.started_at).total_seconds()))
        minutes, seconds = divmod(seconds, 60)
        return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


class DeploymentStep(models.Model):
    """One step of one service: snapshot, apply, wait for the rollout, verify."""

    class Kind(models.TextChoices):
        SNAPSHOT = "snapshot", "Snapshot"
        APPLY = "apply", "Apply"
        WAIT = "wait", "Wait for rollout"
        VERIFY = "verify", "Verify"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"
        CANCELLED = "cancelled", "Cancelled"

    S = Status
    TRANSITIONS: dict[str, set[str]] = {
        S.PENDING: {S.RUNNING, S.SUCCEEDED, S.FAILED, S.SKIPPED, S.CANCELLED},
        S.RUNNING: {S.SUCCEEDED, S.FAILED, S.CANCELLED},
        S.SUCCEEDED: set(),
        S.FAILED: set(),
        S.SKIPPED: set(),
        S.CANCELLED: set(),
    }
    DONE = (S.SUCCEEDED, S.FAILED, S.SKIPPED, S.CANCELLED)
    ORDER = [Kind.SNAPSHOT, Kind.APPLY, Kind.WAIT, Kind.VERIFY]

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="steps")
    service = models.ForeignKey(
        Service, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept as written at the time, so history reads right after a service is renamed or removed.
    service_name = models.CharField(max_length=80)
    tier = models.PositiveIntegerField(default=1)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    message = models.CharField(max_length=500, blank=True, default="")
    # What the step saw and did: images, revisions, versions, replica counts.
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["deployment", "tier", "service_name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "service_name", "kind"], name="uniq_deployment_step"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.service_name} {self.kind} ({self.status})"


class DeploymentLogLine(models.Model):
    """The log of a deployment, line by line; ``seq`` lets a reader tail it by offset."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="log_lines")
    seq = models.PositiveIntegerField()
    step = models.ForeignKey(
        DeploymentStep, null=True, blank=True, on_delete=models.CASCADE, related_name="log_lines"
    )
    service_name = models.CharField(max_length=80, blank=True, default="")
    at = models.DateTimeField(default=timezone.now)
    text = models.TextField()

    class Meta:
        ordering = ["deployment", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "seq"], name="uniq_deployment_log_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.seq}: {self.text[:60]}"


class DeployedVersion(models.Model):
    """What runs where: the version of a service in an environment, and since when."""

    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="deployed_versions"
    )
    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="deployed_versions")
    version = models.CharField(max_length=128)
    image = models.CharField(max_length=500, blank=True, default="")
    revision = models.CharField(max_length=20, blank=True, default="")
    since = models.DateTimeField(default=timezone.now)
    deployment = models.ForeignKey(
        Deployment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["environment", "service__tier", "service__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "service"], name="uniq_deployed_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.service} {self.version} in {self.environment}"
