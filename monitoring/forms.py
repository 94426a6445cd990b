"""Forms of the monitoring pages. They check shapes; services validate meaning."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from releasecenter.validation import load_json

from .models import MAX_TIMEOUT_SECONDS, METHODS, Check, PerformanceTarget

ASSERTIONS_HELP = (
    "One per line, e.g. <code>status == 200</code>, <code>status in [200, 204]</code>, "
    '<code>latency &lt; 500</code>, <code>$.status == "ok"</code>, '
    '<code>$.database in ["connected"]</code>, <code>$.version exists</code>, '
    '<code>body contains "ready"</code>, <code>body matches "^OK"</code>, '
    '<code>header Content-Type == "application/json"</code>, or a JSON object per line.'
)


def assertion_text(spec: dict[str, Any]) -> str:
    """The compact form of an assertion, so people edit what they would have typed."""
    kind = spec.get("type")
    dump = json.dumps
    if kind == "status":
        return (
            f"status == {spec['equals']}" if "equals" in spec else f"status in {dump(spec['in'])}"
        )
    if kind == "latency":
        return f"latency < {spec['max_ms']}"
    if kind == "json" and " " not in spec["path"]:
        if spec["op"] == "exists":
            return f"{spec['path']} exists"
        op = {"equals": "==", "not_equals": "!=", "in": "in"}[spec["op"]]
        return f"{spec['path']} {op} {dump(spec['value'])}"
    if kind == "body_contains":
        return f"body contains {dump(spec['value'])}"
    if kind == "body_matches":
        return f"body matches {dump(spec['pattern'])}"
    if kind == "header" and "exists" not in spec:
        op, value = ("==", spec["equals"]) if "equals" in spec else ("contains", spec["contains"])
        return f"header {spec['name']} {op} {dump(value)}"
    return dump(spec)


def _parse_header_lines(text: str, field: str) -> dict[str, str]:
    headers = {}
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise forms.ValidationError(f"Line {number}: write headers as 'Name: value'.")
        headers[name.strip()] = value.strip()
    return headers


class CheckForm(forms.Form):
    name = forms.CharField(max_length=120)
    environment = forms.ModelChoiceField(queryset=None, to_field_name="name", required=False)
    service = forms.ModelChoiceField(
        queryset=None,
        to_field_name="name",
        required=False,
        help_text="Optional: where the check shows on the Health page.",
    )
    method = forms.ChoiceField(choices=[(m, m) for m in METHODS], initial="GET")
    url = forms.CharField(
        max_length=2000,
        required=False,
        label="URL",
        help_text="A full URL, or a path such as /health joined to the environment's base URL. "
        "Empty: the service's health path.",
    )
    headers = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        help_text="One per line: Name: value.",
    )
    secret_headers = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "autocomplete": "off"}),
        required=False,
        help_text="Encrypted at rest and never shown again. One per line: Name: value. "
        "Leave empty to keep the current ones.",
    )
    clear_secret_headers = forms.BooleanField(required=False, label="Remove the secret headers")
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    assertions = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        initial="status == 200",
        help_text=ASSERTIONS_HELP,
    )
    timeout_seconds = forms.FloatField(
        min_value=0.1, max_value=MAX_TIMEOUT_SECONDS, initial=10, label="Timeout (seconds)"
    )
    interval_seconds = forms.IntegerField(
        required=False,
        min_value=10,
        label="Run every (seconds)",
        help_text="Empty: on demand only.",
    )
    follow_redirects = forms.BooleanField(required=False, initial=False)
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args: Any, project: Any, step: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["environment"].queryset = project.environments.all()
        self.fields["service"].queryset = project.services.all()
        self.step = step
        if step:
            for name in ("environment", "interval_seconds", "enabled"):
                del self.fields[name]
        else:
            self.fields["environment"].required = True

    @classmethod
    def initial_for(cls, check: Check) -> dict[str, Any]:
        return {
            "name": check.name,
            "environment": check.environment.name,
            "service": check.service.name if check.service_id else None,
            "method": check.method,
            "url": check.url,
            "headers": "\n".join(f"{k}: {v}" for k, v in (check.headers or {}).items()),
            "body": check.body,
            "assertions": "\n".join(assertion_text(a) for a in check.assertions),
            "timeout_seconds": check.timeout_seconds,
            "interval_seconds": check.interval_seconds,
            "follow_redirects": check.follow_redirects,
            "enabled": check.enabled,
        }

    def clean_headers(self) -> dict[str, str]:
        return _parse_header_lines(self.cleaned_data["headers"], "headers")

    def clean_secret_headers(self) -> dict[str, str]:
        return _parse_header_lines(self.cleaned_data["secret_headers"], "secret_headers")

    def clean_assertions(self) -> list[Any]:
        items: list[Any] = []
        for number, line in enumerate(self.cleaned_data["assertions"].splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                try:
                    items.append(load_json(line))
                except ValueError:
                    raise forms.ValidationError(f"Line {number} is not a JSON object.") from None
            else:
                items.append(line)
        return items

    def service_arguments(self) -> dict[str, Any]:
        """The cleaned data as keyword arguments of services.create_check / update_check."""
        data = dict(self.cleaned_data)
        secret = data.pop("secret_headers")
        clear = data.pop("clear_secret_headers")
        data["secret_headers"] = {} if clear else (secret or None)
        if "service" in data:
            data["service"] = data["service"]
        return data


class SuiteForm(forms.Form):
    name = forms.CharField(max_length=120)
    environment = forms.ModelChoiceField(queryset=None, to_field_name="name")
    service = forms.ModelChoiceField(queryset=None, to_field_name="name", required=False)
    interval_seconds = forms.IntegerField(
        required=False, min_value=10, label="Run every (seconds)", help_text="Empty: on demand."
    )
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args: Any, project: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["environment"].queryset = project.environments.all()
        self.fields["service"].queryset = project.services.all()


class EnvironmentMonitoringForm(forms.Form):
    allow_list = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        help_text="One per line: an address, a CIDR or a host name, optionally with :port "
        "(127.0.0.1, 10.20.0.0/16, status.internal:8443). Opens addresses refused by default; "
        "this application's database and Redis stay refused.",
    )
    allow_public = forms.BooleanField(
        required=False, label="Allow public addresses", help_text="Off: allow-listed only."
    )
    contact_emails = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        help_text="One per line; they get an email when a check fails or recovers.",
    )
    webhook_url = forms.CharField(
        max_length=2000,
        required=False,
        label="Webhook URL (Slack-compatible)",
        help_text="Stored encrypted and never shown again. Leave empty to keep the current one.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    clear_webhook = forms.BooleanField(required=False, label="Remove the webhook")
    proxy_url = forms.CharField(
        max_length=2000,
        required=False,
        label="HTTP proxy for checks",
        help_text="http://host:port (credentials allowed: user:password@). Every HTTP check of "
        "this environment goes through it; its own address must pass the address guard. Stored "
        "encrypted; leave empty to keep the current one.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    clear_proxy = forms.BooleanField(required=False, label="Remove the proxy")
    client_certificate = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        label="Client certificate (PEM)",
        help_text="For targets that require mutual TLS, with its key below.",
    )
    client_key = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off"}),
        required=False,
        label="Client key (PEM, unencrypted)",
        help_text="Stored encrypted and never shown again.",
    )
    clear_client_certificate = forms.BooleanField(
        required=False, label="Remove the client certificate"
    )

    def service_arguments(self, is_admin: bool) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        clear = data.pop("clear_webhook")
        if clear:
            data["webhook_url"] = ""
        elif not data["webhook_url"]:
            data["webhook_url"] = None
        if data.pop("clear_proxy"):
            data["proxy_url"] = ""
        elif not data["proxy_url"]:
            data["proxy_url"] = None
        if data.pop("clear_client_certificate"):
            data["client_certificate"] = data["client_key"] = ""
        elif not data["client_certificate"] and not data["client_key"]:
            data["client_certificate"] = data["client_key"] = None
        if not is_admin:
            for name in ("allow_list", "allow_public", "proxy_url"):
                data.pop(name)
        return data


class TargetForm(forms.Form):
    metric = forms.ChoiceField(choices=PerformanceTarget.Metric.choices)
    target = forms.FloatField(min_value=0)
    alert_threshold = forms.FloatField(min_value=0, label="Alert above")
    window_hours = forms.IntegerField(min_value=1, max_value=168, initial=1, label="Window (hours)")
