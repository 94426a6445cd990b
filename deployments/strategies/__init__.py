"""Deployment strategies, one module each behind the interface in ``base`` (see its recipe)."""

from __future__ import annotations

from typing import Any

from .base import Aborted, Outcome, Reporter, ServicePlan, Snapshot, Strategy, StrategyError
from .external import ExternalStrategy
from .kubernetes import KubernetesStrategy
from .webhook import WebhookStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    KubernetesStrategy.name: KubernetesStrategy,
    WebhookStrategy.name: WebhookStrategy,
    ExternalStrategy.name: ExternalStrategy,
}


def runs_on_worker(name: str) -> bool:
    return STRATEGIES[name].runs_on_worker


def build(target: Any, deployment: Any, policy: Any) -> Strategy:
    """The strategy for a DeployTarget and the Deployment it runs (decrypted secrets inside)."""
    if deployment.strategy == KubernetesStrategy.name:
        return KubernetesStrategy(
            namespace=target.namespace,
            api_url=target.api_url,
            token=target.bearer_token,
            kubeconfig=target.kubeconfig,
            ca_certificate=target.ca_certificate,
            verify_tls=target.verify_tls,
            change_cause=f"Release Center deployment #{deployment.pk}: {deployment.kind} "
            f"{deployment.version}",
        )
    if deployment.strategy == WebhookStrategy.name:
        return WebhookStrategy(
            url=target.webhook_url,
            status_url=target.webhook_status_url,
            secret=target.webhook_secret,
            policy=policy,
            deployment_id=deployment.pk,
            environment=target.environment.name,
            release=deployment.version,
            commit=deployment.release.commit_sha,
        )
    raise StrategyError(f"The {deployment.strategy} strategy does not run on a worker.")


__all__ = [
    "STRATEGIES",
    "Aborted",
    "Outcome",
    "Reporter",
    "ServicePlan",
    "Snapshot",
    "Strategy",
    "StrategyError",
    "build",
    "runs_on_worker",
]
