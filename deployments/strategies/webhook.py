"""Webhook: ask another system to deploy, tier by tier, and poll it until it says how it went.

For each tier the worker POSTs JSON to the environment's hook URL::

    {"action": "deploy" | "rollback", "deployment": 12, "delivery": "12-2-deploy",
     "environment": "staging", "release": "1.4.0", "commit": "ab12…", "tier": 2,
     "services": [{"name": "cart-service", "version": "1.4.0"}, ...]}

signed with the environment's secret: ``X-ReleaseCenter-Signature: t=<unix time>,v1=<hex>``
where hex = HMAC-SHA256(secret, "<t>.<body>"), so a receiver can refuse forgeries and replays.
``delivery`` is the same on a retry, so a receiver can ignore a request it has seen.

The answer may name a ``status_url``; otherwise the configured status URL is used, with
``{deployment_id}`` and ``{tier}`` filled in. The worker GETs it (signed over an empty body) every
``poll_interval`` seconds until it answers ``{"status": "succeeded"}`` or ``{"status": "failed",
"message": "..."}``; ``"services": {"name": {"desired": 2, "updated": 1, "available": 1}}`` in an
answer is shown as progress. All requests go through the SSRF-guarded client.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

import httpx

from monitoring.lib.ssrf import AddressPolicy, SSRFBlocked, make_client

from .base import (
    Outcome,
    Reporter,
    ServicePlan,
    Snapshot,
    Strategy,
    StrategyError,
    outside_event_loop,
)

SIGNATURE_HEADER = "X-ReleaseCenter-Signature"


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, body: bytes, header: str, tolerance: int = 300) -> bool:
    """What a receiver does; used by the tests' receiver and offered to integrators."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


class WebhookStrategy(Strategy):
    name = "webhook"

    def __init__(
        self,
        *,
        url: str,
        status_url: str,
        secret: str,
        policy: AddressPolicy,
        deployment_id: int,
        environment: str,
        release: str,
        commit: str,
        poll_interval: float = 1.0,
        request_timeout: float = 10.0,
    ) -> None:
        if not url:
            raise StrategyError("No webhook URL is configured for this environment.")
        if not secret:
            raise StrategyError("No webhook secret is configured for this environment.")
        self.url = url
        self.status_url = status_url
        self.secret = secret
        self.policy = policy
        self.deployment_id = deployment_id
        self.environment = environment
        self.release = release
        self.commit = commit
        self.poll_interval = poll_interval
        self.request_timeout = request_timeout
        self._status_urls: dict[int, str] = {}

    def _request(self, method: str, url: str, payload: dict | None = None) -> httpx.Response:
        body = json.dumps(payload, separators=(",", ":")).encode() if payload is not None else b""
        headers = {SIGNATURE_HEADER: sign(self.secret, body), "Content-Type": "application/json"}

        async def send() -> httpx.Response:
            async with make_client(self.policy, timeout=self.request_timeout) as http:
                return await http.request(method, url, content=body or None, headers=headers)

        try:
            return outside_event_loop(lambda: asyncio.run(send()))
        except SSRFBlocked as exc:
            raise StrategyError(
                f"The webhook address is not allowed: {exc.decision.message}"
            ) from None
        except httpx.HTTPError as exc:
            raise StrategyError(f"The webhook could not be reached: {exc}") from None

    def snapshot(self, plans: Sequence[ServicePlan]) -> Snapshot:
        outcomes = {
            plan.service_name: Outcome(True, "the webhook's system keeps its own history")
            for plan in plans
        }
        return Snapshot("", "", outcomes)

    def _trigger(self, action: str, plans: Sequence[ServicePlan]) -> dict[str, Outcome]:
        tier = plans[0].tier
        payload: dict[str, Any] = {
            "action": action,
            "deployment": self.deployment_id,
            "delivery": f"{self.deployment_id}-{tier}-{action}",
            "environment": self.environment,
            "release": self.release,
            "commit": self.commit,
            "tier": tier,
            "services": [{"name": p.target_name, "version": p.version} for p in plans],
        }
        response = self._request("POST", self.url, payload)
        if response.status_code >= 300:
            message = f"the webhook answered {response.status_code}"
            return {p.service_name: Outcome(False, message) for p in plans}
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        status_url = (answer or {}).get("status_url") if isinstance(answer, dict) else None
        self._status_urls[tier] = status_url or self.status_url.format(
            deployment_id=self.deployment_id, tier=tier
        )
        message = f"the webhook accepted the {action} of tier {tier} ({response.status_code})"
        return {p.service_name: Outcome(True, message) for p in plans}

    def apply(self, plans: Sequence[ServicePlan], reporter: Reporter) -> dict[str, Outcome]:
        return self._trigger("deploy", plans)

    def undo(self, plans: Sequence[ServicePlan], reporter: Reporter) -> dict[str, Outcome]:
        for plan in plans:
            if not plan.undo_to_version:
                return {
                    p.service_name: Outcome(False, "the version to restore is unknown")
                    for p in plans
                }
            plan.version = plan.undo_to_version
        return self._trigger("rollback", plans)

    def wait(
        self, plans: Sequence[ServicePlan], reporter: Reporter, timeout: float
    ) -> dict[str, Outcome]:
        tier = plans[0].tier
        url = self._status_urls.get(tier)
        if not url:
            return {p.service_name: Outcome(False, "no status URL to poll") for p in plans}
        by_name = {p.target_name: p for p in plans}
        deadline = time.monotonic() + timeout
        last_message = ""
        while time.monotonic() < deadline:
            reporter.check()
            response = self._request("GET", url)
            answer: Any = {}
            if response.status_code == 200:
                try:
                    answer = response.json()
                except ValueError:
                    answer = {}
            if isinstance(answer, dict):
                for name, counts in (answer.get("services") or {}).items():
                    plan = by_name.get(name)
                    if plan is not None and isinstance(counts, dict):
                        reporter.progress(
                            plan,
                            int(counts.get("desired") or 0),
                            int(counts.get("updated") or 0),
                            int(counts.get("available") or 0),
                        )
                status = answer.get("status")
                message = str(answer.get("message") or "")[:300]
                if message and message != last_message:
                    last_message = message
                    reporter.log(None, f"webhook: {message}")
                if status in ("succeeded", "failed"):
                    ok = status == "succeeded"
                    text = message or f"the webhook reports {status}"
                    return {p.service_name: Outcome(ok, text) for p in plans}
            time.sleep(self.poll_interval)
        return {
            p.service_name: Outcome(False, f"the webhook did not report within {timeout:g} s")
            for p in plans
        }
