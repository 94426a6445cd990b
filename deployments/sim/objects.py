"""Shapes of the Kubernetes objects the simulated cluster serves.

Pure helpers with no state: API errors rendered as ``Status`` objects, label and field
selectors, the pod-template hash, conditions, image tags, and the defaulting and validation
the real API server applies to a Deployment before storing it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
TEMPLATE_HASH_LABEL = "pod-template-hash"

# The alphabet Kubernetes uses for generated name suffixes: no vowels, so no words.
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class ApiError(Exception):
    """An error the API answers with a ``Status`` object, the way kube-apiserver does."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def not_found(resource: str, name: str, group: str = "apps") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    details = {"name": name, "kind": resource}
    if group:
        details["group"] = group
    return ApiError(404, "NotFound", f'{qualified} "{name}" not found', details)


def invalid(kind: str, name: str, causes: list[str]) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f'{kind}.apps "{name}" is invalid: {"; ".join(causes)}',
        {"name": name, "group": "apps", "kind": kind.lower() + "s"},
    )


def now_rfc3339() -> str:
    """Kubernetes timestamps: UTC with second precision."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clone(obj: Any) -> Any:
    """A deep copy of a JSON document; faster than copy.deepcopy for plain JSON."""
    return json.loads(json.dumps(obj))


def image_tag(image: str) -> str:
    """The tag of an image reference: what follows the last ':' of the name.

    A ':' inside the registry part ("registry:5000/web") is a port, not a tag, and a
    reference without a tag means "latest", as for docker.
    """
    name = image.split("@", 1)[0]
    _, sep, tail = name.rpartition(":")
    if not sep or "/" in tail:
        return "latest"
    return tail


def template_images(template: dict) -> list[str]:
    spec = template.get("spec") or {}
    return [c.get("image", "") for c in spec.get("containers") or []]


def without_hash_label(template: dict) -> dict:
    """The pod template as the user wrote it, minus the label the controller adds."""
    result = copy.deepcopy(template)
    labels = (result.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(TEMPLATE_HASH_LABEL, None)
    return result


def template_hash(template: dict) -> str:
    """A stable, name-safe digest of a pod template (the ReplicaSet name suffix)."""
    payload = json.dumps(without_hash_label(template), sort_keys=True, separators=(",", ":"))
    number = int.from_bytes(hashlib.sha256(payload.encode()).digest()[:8], "big")
    chars = []
    for _ in range(10):
        number, index = divmod(number, len(_SAFE_ALPHABET))
        chars.append(_SAFE_ALPHABET[index])
    return "".join(chars)


def set_condition(
    status: dict, ctype: str, value: str, reason: str, message: str, now: str, touch: bool = False
) -> bool:
    """Set a condition the way controllers do; return whether anything changed.

    ``lastTransitionTime`` moves only when the status flips; ``lastUpdateTime`` moves on
    any change, or always with ``touch`` (the Progressing condition is touched on every
    step of progress, and the progress deadline counts from that moment).
    """
    conditions = status.setdefault("conditions", [])
    for condition in conditions:
        if condition["type"] != ctype:
            continue
        same = (
            condition["status"] == value
            and condition.get("reason") == reason
            and condition.get("message") == message
        )
        if same and not touch:
            return False
        if condition["status"] != value:
            condition["lastTransitionTime"] = now
        changed = not same or condition.get("lastUpdateTime") != now
        condition.update(status=value, reason=reason, message=message, lastUpdateTime=now)
        return changed
    conditions.append(
        {
            "type": ctype,
            "status": value,
            "lastUpdateTime": now,
            "lastTransitionTime": now,
            "reason": reason,
            "message": message,
        }
    )
    return True


def get_condition(status: dict, ctype: str) -> dict | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == ctype:
            return condition
    return None


def max_unavailable(spec: dict) -> int:
    """spec.strategy.rollingUpdate.maxUnavailable resolved against spec.replicas."""
    replicas = spec.get("replicas", 1)
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    value = rolling.get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        try:
            return replicas * int(value[:-1]) // 100
        except ValueError:
            return 0
    return value if isinstance(value, int) else 0


# -- defaulting and validation -------------------------------------------------------------


def default_pod_template(template: dict) -> None:
    """Fill the fields the API server defaults, so templates compare equal after a round trip.

    ``kubectl rollout undo`` copies a ReplicaSet's (defaulted) template back into the
    Deployment; the controller recognises the old ReplicaSet only if both were defaulted
    the same way.
    """
    spec = template.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for container in spec.get("containers") or []:
        if not isinstance(container, dict):
            continue
        pull = (
            "Always" if image_tag(str(container.get("image", ""))) == "latest" else "IfNotPresent"
        )
        container.setdefault("imagePullPolicy", pull)
        container.setdefault("resources", {})
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")


def default_deployment_spec(spec: dict, progress_deadline_seconds: int) -> None:
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", progress_deadline_seconds)
    spec.setdefault(
        "strategy",
        {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
    )
    if isinstance(spec.get("template"), dict):
        default_pod_template(spec["template"])


def validate_name(kind: str, name: Any) -> None:
    if not isinstance(name, str) or len(name) > 253 or not _NAME_RE.match(name):
        raise invalid(
            kind,
            str(name),
            [f'metadata.name: Invalid value: "{name}": must be a lowercase RFC 1123 subdomain'],
        )


def validate_deployment_spec(name: str, spec: Any) -> None:
    """The checks of the real API that a patch in a test or demo is likely to trip."""
    if not isinstance(spec, dict):
        raise invalid("Deployment", name, ["spec: Required value"])
    causes: list[str] = []
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        causes.append(f"spec.replicas: Invalid value: {replicas!r}: must be a non-negative integer")
    deadline = spec.get("progressDeadlineSeconds")
    if not isinstance(deadline, int) or isinstance(deadline, bool) or deadline <= 0:
        causes.append(
            f"spec.progressDeadlineSeconds: Invalid value: {deadline!r}: must be greater than 0"
        )
    selector = (spec.get("selector") or {}).get("matchLabels")
    if not isinstance(selector, dict) or not selector:
        causes.append("spec.selector: Required value")
        selector = {}
    template = spec.get("template")
    if not isinstance(template, dict):
        causes.append("spec.template: Required value")
        raise invalid("Deployment", name, causes)
    labels = (template.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        causes.append(
            "spec.template.metadata.labels: Invalid value: "
            f"{json.dumps(labels)}: `selector` does not match template `labels`"
        )
    containers = (template.get("spec") or {}).get("containers")
    if not isinstance(containers, list) or not containers:
        causes.append("spec.template.spec.containers: Required value")
    else:
        seen: set[str] = set()
        for index, container in enumerate(containers):
            where = f"spec.template.spec.containers[{index}]"
            if not isinstance(container, dict) or not container.get("name"):
                causes.append(f"{where}.name: Required value")
                continue
            if container["name"] in seen:
                causes.append(f'{where}.name: Duplicate value: "{container["name"]}"')
            seen.add(container["name"])
            if not isinstance(container.get("image"), str) or not container["image"]:
                causes.append(f"{where}.image: Required value")
    if causes:
        raise invalid("Deployment", name, causes)


# -- selectors -----------------------------------------------------------------------------

_REQUIREMENT_RE = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|!=|=|\s+in\s+|\s+notin\s+)\s*(?P<value>.*?))?\s*$"
)


@dataclass(frozen=True)
class Selector:
    """A parsed ``labelSelector`` plus ``fieldSelector`` of a list or watch request.

    Label requirements are (key, operator, values) with operators ``=``, ``!=``, ``in``,
    ``notin``, ``exists`` and ``!``. Field selectors support metadata.name and
    metadata.namespace, which is all the real API offers for Deployments.
    """

    labels: tuple[tuple[str, str, frozenset[str]], ...] = ()
    fields: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def parse(cls, label_selector: str | None, field_selector: str | None) -> Selector:
        return cls(_parse_labels(label_selector or ""), _parse_fields(field_selector or ""))

    @property
    def exact_name(self) -> str | None:
        """The one name this selector pins, if it does (lets watches be indexed by name)."""
        for field, op, value in self.fields:
            if field == "metadata.name" and op == "=":
                return value
        return None

    def matches(self, namespace: str, name: str, labels: dict[str, str]) -> bool:
        for field, op, value in self.fields:
            actual = name if field == "metadata.name" else namespace
            if (actual == value) != (op == "="):
                return False
        for key, op, values in self.labels:
            present = key in labels
            if op == "exists":
                ok = present
            elif op == "!":
                ok = not present
            elif op in ("=", "in"):
                ok = present and labels[key] in values
            else:  # "!=" and "notin" also match objects without the label
                ok = not present or labels[key] not in values
            if not ok:
                return False
        return True


def _split_requirements(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def _bad_selector(text: str, why: str) -> ApiError:
    return ApiError(400, "BadRequest", f'unable to parse requirement "{text}": {why}')


def _parse_labels(text: str) -> tuple[tuple[str, str, frozenset[str]], ...]:
    result = []
    for part in _split_requirements(text):
        match = _REQUIREMENT_RE.match(part)
        if not match:
            raise _bad_selector(part, "invalid label selector")
        key, op, value = match["key"], (match["op"] or "").strip(), match["value"]
        if match["neg"]:
            if op:
                raise _bad_selector(part, "'!' takes no operator")
            result.append((key, "!", frozenset()))
        elif not op:
            result.append((key, "exists", frozenset()))
        elif op in ("in", "notin"):
            value = (value or "").strip()
            if not (value.startswith("(") and value.endswith(")")):
                raise _bad_selector(part, "values must be in parentheses")
            values = frozenset(v.strip() for v in value[1:-1].split(",") if v.strip())
            result.append((key, op, values))
        else:
            result.append((key, "!=" if op == "!=" else "=", frozenset([value or ""])))
    return tuple(result)


def _parse_fields(text: str) -> tuple[tuple[str, str, str], ...]:
    result = []
    for part in _split_requirements(text):
        for op in ("!=", "==", "="):
            field, sep, value = part.partition(op)
            if sep:
                break
        else:
            raise ApiError(400, "BadRequest", f'invalid field selector: "{part}"')
        field = field.strip()
        if field not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest", f'field label not supported: "{field}"')
        result.append((field, "!=" if op == "!=" else "=", value.strip()))
    return tuple(result)
