"""What the probe kinds add to a check's definition and its recording.

`monitoring.services` owns creating, running and recording checks; this module holds the parts
that belong to one probe kind or to an environment's transport, so that file stays about the
common path:

* TCP checks (`tcp://host:port`): their fields, and the guard's verdict on the port when they
  are saved (refused again at connect time by the engine).
* The environment's transport for HTTP checks: an optional proxy (an admin's choice, judged by
  the guard like a target) and a client certificate for mutual TLS (key stored encrypted).
* TLS: the certificate each HTTPS answer carried, written on the check when it changes, and the
  certificates expiring soon for the Health page.

To add a probe kind: add it to `Check.Probe`, validate its fields in `clean_probe_fields`,
and teach the engine (`monitoring.lib.engine`) to run it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone

from releasecenter.crypto import DecryptionError
from releasecenter.models import Environment

from .lib.engine import ClientCertificate
from .lib.ssrf import AddressPolicy
from .models import Check, EnvironmentMonitoring

EXPIRING_WITHIN_DAYS = 30
MAX_EXPECT_CHARS = 500


# --- definitions -------------------------------------------------------------------------------


def clean_probe(value: Any) -> str:
    probe = (value or Check.Probe.HTTP) if isinstance(value, str | type(None)) else value
    if probe not in Check.Probe.values:
        raise ValidationError(
            {"probe": f"Use one of {', '.join(Check.Probe.values)}, not {value!r}."}
        )
    return probe


def clean_expect(value: Any) -> str:
    text = value or ""
    if not isinstance(text, str) or len(text) > MAX_EXPECT_CHARS:
        raise ValidationError({"expect": f"A reply pattern is text of {MAX_EXPECT_CHARS} at most."})
    try:
        re.compile(text)
    except re.error as exc:
        raise ValidationError({"expect": f"Not a regular expression: {exc}."}) from None
    return text


def tcp_address(url: str) -> tuple[str, int]:
    """(host, port) of a "tcp://host:port" URL, or a ValidationError on `url`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError({"url": f"Not a tcp://host:port address: {exc}."}) from None
    if parts.scheme != "tcp" or not parts.hostname or port is None:
        raise ValidationError({"url": "A TCP check's URL is tcp://host:port."})
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValidationError({"url": "A TCP check's URL is tcp://host:port, nothing more."})
    return parts.hostname, port


def validate_tcp_destination(policy: AddressPolicy, url: str) -> None:
    """The guard's verdict on a TCP check's host and port: a 400 naming the rule when refused."""
    host, port = tcp_address(url)
    decision = policy.check_host(host, port)
    if not decision.allowed:
        raise ValidationError(
            {"url": f"Refused by the address guard (rule: {decision.rule}): {decision.message}."},
            code=decision.rule,
        )


def check_http_fields(check: Check) -> None:
    """Fields that only make sense for one probe kind, cleared or refused on the others."""
    if check.probe == Check.Probe.TCP:
        if check.follow_redirects:
            raise ValidationError({"follow_redirects": "A TCP check has no redirects."})
        if check.headers or check.secret_header_names:
            raise ValidationError({"headers": "A TCP check sends no headers."})
        for spec in check.assertions:
            if spec["type"] not in ("latency", "body_contains", "body_matches"):
                raise ValidationError(
                    {
                        "assertions": f"A TCP check takes latency and reply (body_contains, "
                        f"body_matches) assertions, not {spec['type']}."
                    }
                )
    elif check.expect:
        raise ValidationError({"expect": "Only a TCP check waits for a reply pattern."})
    if check.probe != Check.Probe.HEARTBEAT:
        for name in ("heartbeat_period_seconds", "heartbeat_cron"):
            if getattr(check, name):
                raise ValidationError({name: "Only a heartbeat check has a ping schedule."})


# --- the environment's transport ---------------------------------------------------------------


def clean_proxy_url(policy: AddressPolicy, value: Any) -> str:
    url = (value or "").strip() if isinstance(value, str | type(None)) else None
    if url is None:
        raise ValidationError({"proxy_url": "Give the proxy as http://host:port."})
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError({"proxy_url": f"Not a proxy URL: {exc}."}) from None
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise ValidationError({"proxy_url": "Give the proxy as http://host:port."})
    decision = policy.check_host(parts.hostname, port or 80)
    if not decision.allowed:
        raise ValidationError(
            {
                "proxy_url": f"Refused by the address guard (rule: {decision.rule}): "
                f"{decision.message}."
            },
            code=decision.rule,
        )
    return url


def clean_client_certificate(certificate: Any, key: Any) -> tuple[str, str]:
    """A PEM certificate and its PEM private key, both or neither; checked to belong together."""
    cert_text = (certificate or "").strip()
    key_text = (key or "").strip()
    if not cert_text and not key_text:
        return "", ""
    if not cert_text:
        raise ValidationError({"client_certificate": "Give the certificate with its key."})
    if not key_text:
        raise ValidationError({"client_key": "Give the private key with its certificate."})
    try:
        cert = x509.load_pem_x509_certificate(cert_text.encode())
    except ValueError:
        raise ValidationError({"client_certificate": "Not a PEM certificate."}) from None
    try:
        private = serialization.load_pem_private_key(key_text.encode(), password=None)
    except (ValueError, TypeError):
        raise ValidationError({"client_key": "Not an unencrypted PEM private key."}) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.PEM
    if cert.public_key().public_bytes(encoding, public) != private.public_key().public_bytes(
        encoding, public
    ):
        raise ValidationError({"client_key": "This key does not belong to the certificate."})
    return cert_text, key_text


def transport_for(row: EnvironmentMonitoring) -> tuple[str | None, ClientCertificate | None, str]:
    """(proxy URL, client certificate, problem) for an environment's HTTP checks."""
    try:
        proxy = row.proxy_url or None
        certificate = (
            ClientCertificate(row.client_certificate, row.client_key)
            if row.client_certificate and row.client_key
            else None
        )
    except DecryptionError:
        return None, None, "the proxy or client key cannot be decrypted with the current key"
    return proxy, certificate, ""


# --- TLS certificates --------------------------------------------------------------------------


def record_certificates(outcomes: Iterable[Any]) -> None:
    """Write each HTTPS answer's certificate on its check, only when it changed (a renewal), so
    a run of unchanged certificates costs no statement at all."""
    for outcome in outcomes:
        tls = getattr(outcome, "tls", None)
        if tls is None:
            continue
        check = outcome.check
        names = list(tls.names)
        if (
            check.cert_not_after == tls.not_after
            and check.cert_issuer == tls.issuer[:300]
            and check.cert_names == names
            and check.tls_version == tls.version
        ):
            continue
        check.cert_not_after, check.cert_issuer = tls.not_after, tls.issuer[:300]
        check.cert_names, check.tls_version = names, tls.version[:10]
        Check.objects.filter(pk=check.pk).update(
            cert_not_after=check.cert_not_after,
            cert_issuer=check.cert_issuer,
            cert_names=check.cert_names,
            tls_version=check.tls_version,
        )


def expiring_certificates(
    checks: QuerySet[Check], now: datetime | None = None, within_days: int = EXPIRING_WITHIN_DAYS
) -> Sequence[Check]:
    """Checks whose target's certificate expires within `within_days` (or has expired),
    soonest first."""
    moment = now or timezone.now()
    return list(
        checks.filter(
            parent__isnull=True,
            cert_not_after__isnull=False,
            cert_not_after__lte=moment + timedelta(days=within_days),
        )
        .select_related("environment", "service")
        .order_by("cert_not_after", "pk")
    )


def environment_proxy(environment: Environment) -> str:
    try:
        return environment.monitoring.proxy_origin()
    except (EnvironmentMonitoring.DoesNotExist, DecryptionError):
        return ""
