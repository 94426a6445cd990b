"""Kubernetes: patch each service's Deployment to the release's image tag and watch it roll out.

Through the official ``kubernetes`` client, as an operator would with kubectl:

* snapshot: list the namespace's Deployments once (``kubectl get deploy -o yaml``) and note each
  service's container image and revision;
* apply: a strategic-merge patch of the main container's image (``kubectl set image``), with the
  ``kubernetes.io/change-cause`` annotation naming the deployment; patching to the image it
  already runs changes nothing, so applying twice has one result;
* wait: one list and one watch per tier over the namespace, judged the way ``kubectl rollout
  status`` judges (``rollout_status`` below): the new generation observed, updated = desired,
  no old replicas left, updated available, and ProgressDeadlineExceeded as failure;
* undo: what ``kubectl rollout undo`` does: copy the previous ReplicaSet's pod template back
  into the Deployment (a JSON patch of /spec/template), after which the controller scales that
  ReplicaSet up again under a new revision.

Credentials (a bearer token, or a kubeconfig whose users hold inline tokens or certificates) come
decrypted from the DeployTarget and live only in the client's configuration; they are never
logged. Kubeconfigs that would run programs (``exec``, ``auth-provider``) or read files are
refused: a worker must not execute whatever a project admin pastes.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import load_kube_config_from_dict

from .base import Aborted, Outcome, Reporter, ServicePlan, Snapshot, Strategy, StrategyError

logger = logging.getLogger(__name__)

REVISION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH_LABEL = "pod-template-hash"
CHANGE_CAUSE = "kubernetes.io/change-cause"
RETRY_STATUSES = {429, 500, 502, 503, 504}
OBSERVING = "Waiting for deployment spec update to be observed..."
# A watch is reopened at least this often, so cancellation and lost ownership are noticed.
WATCH_SLICE_SECONDS = 5


# --- Pure helpers (no cluster needed) ----------------------------------------------------------


def image_tag(image: str) -> str:
    """The tag of an image reference ("registry:5000/web:1.4" -> "1.4"; no tag -> "latest")."""
    name = image.split("@", 1)[0]
    _, sep, tail = name.rpartition(":")
    if not sep or "/" in tail:
        return "latest"
    return tail


def with_tag(image: str, tag: str) -> str:
    """The same repository at another tag; a digest pin is dropped, since the tag replaces it."""
    name = image.split("@", 1)[0]
    head, sep, tail = name.rpartition(":")
    if sep and "/" not in tail:
        name = head
    return f"{name}:{tag}"


def tag_for_version(version: str) -> str:
    """Image tags allow [A-Za-z0-9_.-]; a release version may carry '+build' metadata."""
    return version.replace("+", "_")


def main_container(deployment: dict, deployment_name: str) -> dict | None:
    """The container named like the Deployment, else the first one."""
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or []
    for container in containers:
        if container.get("name") == deployment_name:
            return container
    return containers[0] if containers else None


def revision_of(obj: dict) -> str:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION, "")


def rollout_status(deployment: dict, min_generation: int = 0) -> tuple[str, str]:
    """("waiting" | "complete" | "failed", message), as ``kubectl rollout status`` decides."""
    metadata = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    spec = deployment.get("spec") or {}
    name = metadata.get("name", "?")
    generation = max(int(metadata.get("generation") or 0), min_generation)
    if int(status.get("observedGeneration") or 0) < generation:
        return "waiting", OBSERVING
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and (
            condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return "failed", f'deployment "{name}" exceeded its progress deadline'
    desired = spec.get("replicas", 1)
    updated = status.get("updatedReplicas") or 0
    replicas = status.get("replicas") or 0
    available = status.get("availableReplicas") or 0
    if updated < desired:
        return "waiting", (
            f'Waiting for deployment "{name}" rollout to finish: {updated} out of {desired} new '
            "replicas have been updated..."
        )
    if replicas > updated:
        return "waiting", (
            f'Waiting for deployment "{name}" rollout to finish: {replicas - updated} old '
            "replicas are pending termination..."
        )
    if available < updated:
        return "waiting", (
            f'Waiting for deployment "{name}" rollout to finish: {available} of {updated} '
            "updated replicas are available..."
        )
    return "complete", f'deployment "{name}" successfully rolled out'


def replica_counts(deployment: dict) -> tuple[int, int, int]:
    """(desired, updated, available)."""
    status = deployment.get("status") or {}
    return (
        (deployment.get("spec") or {}).get("replicas", 1),
        status.get("updatedReplicas") or 0,
        status.get("availableReplicas") or 0,
    )


def without_hash_label(template: dict) -> dict:
    template = json.loads(json.dumps(template))
    labels = (template.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(TEMPLATE_HASH_LABEL, None)
    return template


_FILE_KEYS = {
    "certificate-authority",
    "client-certificate",
    "client-key",
    "tokenFile",
    "token-file",
}


def parse_kubeconfig(text: str) -> dict:
    """Parse a kubeconfig and refuse what would make a worker run programs or read its files."""
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # PyYAML's message quotes the offending line, which may hold the token: say where only.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ValueError(f"The kubeconfig is not valid YAML{where}.") from None
    if not isinstance(config, dict) or not config.get("clusters"):
        raise ValueError("The kubeconfig names no cluster.")
    for entry in config.get("users") or []:
        user = (entry or {}).get("user") or {}
        if "exec" in user or "auth-provider" in user:
            raise ValueError(
                "Kubeconfigs whose users run a program (exec, auth-provider) are not accepted; "
                "use a service-account token."
            )
        if _FILE_KEYS & set(user):
            raise ValueError("Inline credentials only (client-certificate-data, token), no files.")
    for entry in config.get("clusters") or []:
        cluster = (entry or {}).get("cluster") or {}
        if _FILE_KEYS & set(cluster):
            raise ValueError("Inline the CA as certificate-authority-data; files are not read.")
        server = str(cluster.get("server") or "")
        if not server.startswith(("https://", "http://")):
            raise ValueError("Each cluster needs an http(s) server URL.")
    return config


_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
_NOT_PLAIN = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _NOT_PLAIN:
            return value
        # A JSON string is a valid YAML double-quoted scalar (its escapes are a subset).
        return json.dumps(value)
    if value is None:
        return "null"
    return json.dumps(value)


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for JSON-like data, ~50x faster than PyYAML's representer (whose Python
    half took a second for 300 Deployments). ``yaml.safe_load`` reads it back unchanged."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        out = []
        for key, item in value.items():
            head = f"{pad}{_scalar(str(key))}:"
            if isinstance(item, (dict, list)) and item:
                out.append(f"{head}\n{to_yaml(item, indent + 2)}")
            else:
                out.append(
                    f"{head} {to_yaml(item, indent + 2) if isinstance(item, (dict, list)) else _scalar(item)}"
                )
        return "\n".join(out)
    if isinstance(value, list):
        if not value:
            return "[]"
        out = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                body = to_yaml(item, indent + 2)
                out.append(f"{pad}- {body[indent + 2 :]}")
            else:
                text = to_yaml(item) if isinstance(item, (dict, list)) else _scalar(item)
                out.append(f"{pad}- {text}")
        return "\n".join(out)
    return pad + _scalar(value)


def describe_api_error(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        message = ""
        try:
            message = json.loads(exc.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            pass
        return f"{exc.status} {exc.reason}" + (f": {message}" if message else "")
    return f"{type(exc).__name__}: {exc}"


# --- The strategy ------------------------------------------------------------------------------


class KubernetesStrategy(Strategy):
    name = "kubernetes"

    def __init__(
        self,
        *,
        namespace: str,
        api_url: str = "",
        token: str = "",
        kubeconfig: str = "",
        ca_certificate: str = "",
        verify_tls: bool = True,
        change_cause: str = "",
        request_timeout: float = 30.0,
        parallelism: int = 8,
    ) -> None:
        self.namespace = namespace
        self.change_cause = change_cause
        self.request_timeout = request_timeout
        self.parallelism = max(1, parallelism)
        self._tempdir = tempfile.TemporaryDirectory(prefix="rc-k8s-")
        config = k8s.Configuration()
        if kubeconfig:
            try:
                load_kube_config_from_dict(
                    parse_kubeconfig(kubeconfig),
                    client_configuration=config,
                    persist_config=False,
                    temp_file_path=self._tempdir.name,
                )
            except (ValueError, ConfigException) as exc:
                raise StrategyError(f"Unusable kubeconfig: {exc}") from None
        else:
            if not api_url:
                raise StrategyError("No Kubernetes API URL is configured for this environment.")
            config.host = api_url.rstrip("/")
            if token:
                config.api_key = {"authorization": f"Bearer {token}"}
        if ca_certificate:
            path = f"{self._tempdir.name}/ca.pem"
            with open(path, "w") as handle:
                handle.write(ca_certificate)
            config.ssl_ca_cert = path
        config.verify_ssl = verify_tls
        # One connection per parallel request, plus the watch.
        config.connection_pool_maxsize = self.parallelism + 2
        # Never let urllib3's debug logging print the Authorization header.
        config.debug = False
        self.api_client = k8s.ApiClient(config)
        self.apps = k8s.AppsV1Api(self.api_client)
        # The objects our patches returned, by name: where a wait can start without a list.
        self._patched: dict[str, dict] = {}

    def close(self) -> None:
        try:
            self.api_client.close()
        finally:
            self._tempdir.cleanup()

    # -- plumbing -------------------------------------------------------------------------------

    def _raw(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict:
        """Call the API and parse the JSON ourselves: the typed models cost ~1 ms per object."""
        for attempt in range(4):
            try:
                response = call(
                    *args,
                    _preload_content=False,
                    _request_timeout=(5, self.request_timeout),
                    **kwargs,
                )
                try:
                    return json.loads(response.data)
                finally:
                    response.release_conn()
            except ApiException as exc:
                if exc.status in (401, 403):
                    raise StrategyError(
                        f"The cluster refused the credentials ({describe_api_error(exc)})."
                    ) from None
                if exc.status not in RETRY_STATUSES or attempt == 3:
                    raise
            except urllib3.exceptions.HTTPError as exc:
                if attempt == 3:
                    raise StrategyError(f"The Kubernetes API is unreachable: {exc}") from None
            time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def _list_deployments(self) -> tuple[list[dict], str]:
        items: list[dict] = []
        token = None
        while True:
            kwargs = {"limit": 500}
            if token:
                kwargs["_continue"] = token
            page = self._raw(self.apps.list_namespaced_deployment, self.namespace, **kwargs)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items, (page.get("metadata") or {}).get("resourceVersion", "")

    def _each(
        self, plans: Sequence[ServicePlan], work: Callable[[ServicePlan], Outcome]
    ) -> dict[str, Outcome]:
        def guarded(plan: ServicePlan) -> Outcome:
            try:
                return work(plan)
            except (StrategyError, Aborted):
                raise
            except ApiException as exc:
                return Outcome(False, describe_api_error(exc))

        if len(plans) == 1:
            return {plans[0].service_name: guarded(plans[0])}
        with ThreadPoolExecutor(max_workers=min(self.parallelism, len(plans))) as pool:
            results = list(pool.map(guarded, plans))
        return {plan.service_name: result for plan, result in zip(plans, results, strict=True)}

    # -- snapshot -------------------------------------------------------------------------------

    def snapshot(self, plans: Sequence[ServicePlan]) -> Snapshot:
        items, _ = self._list_deployments()
        by_name = {item["metadata"]["name"]: item for item in items}
        outcomes: dict[str, Outcome] = {}
        kept = []
        for plan in plans:
            found = by_name.get(plan.target_name)
            if found is None:
                outcomes[plan.service_name] = Outcome(
                    False, f"Deployment {self.namespace}/{plan.target_name} does not exist"
                )
                continue
            kept.append(found)
            container = main_container(found, plan.target_name)
            if container is None:
                outcomes[plan.service_name] = Outcome(False, "the Deployment has no container")
                continue
            facts = {
                "container": container["name"],
                "image_before": container.get("image", ""),
                "version_before": image_tag(container.get("image", "")),
                "revision_before": revision_of(found),
                "generation_before": found["metadata"].get("generation", 0),
            }
            plan.facts.update(facts)
            outcomes[plan.service_name] = Outcome(
                True,
                f"{plan.target_name} runs {facts['image_before']} (revision "
                f"{facts['revision_before'] or '?'})",
                facts,
            )
        for item in kept:
            (item.get("metadata") or {}).pop("managedFields", None)
        document = to_yaml({"apiVersion": "v1", "kind": "List", "items": kept}) + "\n"
        return Snapshot(document, "application/yaml", outcomes)

    # -- apply ----------------------------------------------------------------------------------

    def apply(self, plans: Sequence[ServicePlan], reporter: Reporter) -> dict[str, Outcome]:
        def patch(plan: ServicePlan) -> Outcome:
            if "image_before" not in plan.facts:
                return Outcome(False, "no snapshot of this service; not applied")
            new_image = with_tag(plan.facts["image_before"], plan.version)
            body: dict[str, Any] = {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [{"name": plan.facts["container"], "image": new_image}]
                        }
                    }
                }
            }
            if self.change_cause:
                body["metadata"] = {"annotations": {CHANGE_CAUSE: self.change_cause}}
            patched = self._raw(
                self.apps.patch_namespaced_deployment, plan.target_name, self.namespace, body
            )
            self._patched[plan.target_name] = patched
            generation = patched["metadata"].get("generation", 0)
            facts = {"image_after": new_image, "generation": generation}
            plan.facts.update(facts)
            unchanged = new_image == plan.facts["image_before"]
            message = (
                f"{plan.target_name} already runs {new_image}"
                if unchanged
                else f"patched {plan.target_name} to {new_image} (generation {generation})"
            )
            return Outcome(True, message, facts)

        return self._each(plans, patch)

    # -- wait -----------------------------------------------------------------------------------

    def wait(
        self, plans: Sequence[ServicePlan], reporter: Reporter, timeout: float
    ) -> dict[str, Outcome]:
        deadline = time.monotonic() + timeout
        pending = {plan.target_name: plan for plan in plans}
        outcomes: dict[str, Outcome] = {}
        seen: dict[str, tuple[int, int, int]] = {}
        messages: dict[str, str] = {}

        def judge(obj: dict) -> None:
            name = (obj.get("metadata") or {}).get("name")
            plan = pending.get(name)
            if plan is None:
                return
            state, message = rollout_status(obj, int(plan.facts.get("generation") or 0))
            if message == OBSERVING:
                # The counts still describe the previous template until the controller looks.
                return
            counts = replica_counts(obj)
            if seen.get(name) != counts:
                seen[name] = counts
                reporter.progress(plan, *counts)
            if state == "waiting":
                if messages.get(name) != message:
                    messages[name] = message
                    reporter.log(plan, message)
                return
            del pending[name]
            container = main_container(obj, plan.target_name) or {}
            facts = {
                "revision_after": revision_of(obj),
                "image_after": container.get("image", ""),
                "version_after": image_tag(container.get("image", "")),
            }
            plan.facts.update(facts)
            outcomes[plan.service_name] = Outcome(state == "complete", message, facts)

        resource_version = self._watch_start(list(pending))
        if resource_version:
            for name in list(pending):
                judge(self._patched[name])
        while pending:
            reporter.check()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if not resource_version:
                items, resource_version = self._list_deployments()
                for item in items:
                    judge(item)
                continue
            stream = k8s_watch.Watch()
            try:
                for event in stream.stream(
                    self.apps.list_namespaced_deployment,
                    self.namespace,
                    resource_version=resource_version,
                    timeout_seconds=max(1, int(min(WATCH_SLICE_SECONDS, remaining))),
                    deserialize=False,
                    _request_timeout=(5, WATCH_SLICE_SECONDS + 10),
                ):
                    obj = event.get("object") or {}
                    resource_version = (obj.get("metadata") or {}).get(
                        "resourceVersion", resource_version
                    )
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        judge(obj)
                    elif event.get("type") == "DELETED":
                        plan = pending.pop(obj["metadata"]["name"], None)
                        if plan is not None:
                            outcomes[plan.service_name] = Outcome(
                                False, "the Deployment was deleted during the rollout"
                            )
                    if not pending:
                        stream.stop()
                        break
            except KeyError:
                # An ERROR event (410 Gone: our resourceVersion was compacted); the client's
                # raw mode trips over it. List again and watch from there.
                resource_version = ""
            except ApiException as exc:
                if exc.status == 410:
                    resource_version = ""
                elif exc.status in RETRY_STATUSES:
                    time.sleep(0.5)
                else:
                    raise
            except urllib3.exceptions.HTTPError:
                # The stream broke; resume from the last resourceVersion seen.
                time.sleep(0.2)
        for name, plan in pending.items():
            outcomes[plan.service_name] = Outcome(
                False,
                f"{name} did not finish rolling out within {timeout:g} s"
                + (f" ({messages[name]})" if name in messages else ""),
            )
        return outcomes

    def _watch_start(self, names: list[str]) -> str:
        """Where a wait may start watching without listing the namespace again: the oldest
        resourceVersion our patches returned. Every later change of each patched Deployment
        comes after it. Only when every one was patched by us, and the versions are the plain
        counters etcd hands out; otherwise "" (list first, then watch)."""
        try:
            versions = [int(self._patched[name]["metadata"]["resourceVersion"]) for name in names]
        except (KeyError, TypeError, ValueError):
            return ""
        return str(min(versions)) if versions else ""

    # -- undo -----------------------------------------------------------------------------------

    def undo(self, plans: Sequence[ServicePlan], reporter: Reporter) -> dict[str, Outcome]:
        def restore(plan: ServicePlan) -> Outcome:
            deployment = self._raw(
                self.apps.read_namespaced_deployment, plan.target_name, self.namespace
            )
            uid = deployment["metadata"].get("uid")
            match = (deployment["spec"].get("selector") or {}).get("matchLabels") or {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
            listed = self._raw(
                self.apps.list_namespaced_replica_set, self.namespace, label_selector=selector
            )
            owned = [
                rs
                for rs in listed.get("items") or []
                if any(ref.get("uid") == uid for ref in rs["metadata"].get("ownerReferences") or [])
            ]
            current = int(revision_of(deployment) or 0)
            wanted = plan.undo_to_revision

            def revisions(rs: dict) -> set[str]:
                annotations = rs["metadata"].get("annotations") or {}
                history = annotations.get("deployment.kubernetes.io/revision-history", "")
                return {revision_of(rs), *[h for h in history.split(",") if h]}

            target = next((rs for rs in owned if wanted and wanted in revisions(rs)), None)
            if target is None:
                older = [rs for rs in owned if 0 < int(revision_of(rs) or 0) < current]
                target = max(older, key=lambda rs: int(revision_of(rs)), default=None)
            current_template = without_hash_label(deployment["spec"]["template"])
            if target is None:
                image = plan.undo_to_image
                if not image:
                    return Outcome(False, "no earlier revision to roll back to")
                # The old ReplicaSet was pruned: set the image back, as a person would.
                container = main_container(deployment, plan.target_name) or {}
                body: Any = {
                    "spec": {
                        "template": {
                            "spec": {
                                "containers": [{"name": container.get("name"), "image": image}]
                            }
                        }
                    }
                }
                message = f"no earlier ReplicaSet kept; set the image back to {image}"
            else:
                template = without_hash_label(target["spec"]["template"])
                container = main_container({"spec": {"template": template}}, plan.target_name)
                image = (container or {}).get("image", "")
                if template == current_template:
                    facts = {"image_after": image, "generation": 0, "restored_revision": ""}
                    plan.facts.update(facts)
                    plan.version = image_tag(image)
                    return Outcome(True, f"{plan.target_name} already runs {image}", facts)
                body = [{"op": "replace", "path": "/spec/template", "value": template}]
                message = (
                    f"restored the pod template of revision {revision_of(target)} "
                    f"({image}) to {plan.target_name}"
                )
            patched = self._raw(
                self.apps.patch_namespaced_deployment, plan.target_name, self.namespace, body
            )
            self._patched[plan.target_name] = patched
            facts = {
                "image_after": image,
                "generation": patched["metadata"].get("generation", 0),
                "restored_revision": revision_of(target) if target else "",
            }
            plan.facts.update(facts)
            plan.version = image_tag(image)
            return Outcome(True, message, facts)

        return self._each(plans, restore)
