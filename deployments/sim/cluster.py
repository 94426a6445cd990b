"""A simulated Kubernetes API server ("simcluster") for demos and tests.

Release Center drives clusters through the official ``kubernetes`` Python client. This module
stands in for a cluster: an HTTP server on 127.0.0.1 that speaks enough of the apps/v1 API
for the unmodified client (watches included) to roll Deployments out, watch them progress,
fail and roll back, plus a health endpoint per Deployment that reports the running version.

Use::

    cluster = serve(rollout_seconds=0.5)        # background threads, a free port
    cluster.add_deployment("shop", "web", "registry.example/web:1.4.0", replicas=2)
    config = kubernetes.client.Configuration(host=cluster.url)
    config.api_key = {"authorization": "Bearer anything"}
    apps = kubernetes.client.AppsV1Api(kubernetes.client.ApiClient(config))
    ...
    httpx.get(cluster.health_url("shop", "web"))  # 200 {"status": "healthy", "version": "1.4.0"}
    cluster.stop()

In the foreground: ``python -m deployments.sim --port 8001 --deployment shop/web=web:1.4.0``
(``main``; the ``simcluster`` management command reuses ``add_arguments`` and ``run``).

What the API simulates (JSON only)
----------------------------------
- Deployments: list (namespaced and cluster-wide; labelSelector, fieldSelector on
  metadata.name/metadata.namespace, limit/continue), get, get .../status, create (POST),
  replace (PUT), delete (takes its ReplicaSets along) and PATCH as strategic merge patch
  (lists such as containers merged by name), JSON merge patch or JSON patch. A
  metadata.resourceVersion in a PATCH or PUT body is a precondition: 409 Conflict if stale.
- ReplicaSets: list (namespaced and cluster-wide, with selectors) and get; read-only.
- ``watch=true`` on every list: a chunked stream of JSON lines ``{"type": "ADDED" |
  "MODIFIED" | "DELETED", "object": {...}}`` that honours timeoutSeconds and the selectors.
  From resourceVersion N it replays the retained events newer than N (at least the last
  ``history_size``); an N older than that gets an ERROR event holding a 410 Expired Status,
  like a compacted etcd. With no resourceVersion (or "0") it opens with an ADDED event per
  existing object.
- metadata.resourceVersion is one global counter (as a string); metadata.generation moves
  with every change of spec; uid, creationTimestamp, labels, annotations are kept.
- Namespaces: list and get of "default" and of every namespace holding a Deployment.
- /version, /api, /api/v1, /apis, /apis/apps, /apis/apps/v1 discovery documents.
- Errors are Status objects (404 NotFound, 409 Conflict, 422 Invalid, 415, 401 ...).
- Any bearer token is accepted, unless ``token`` is set: then other requests get 401.

What the controller (one thread) simulates
------------------------------------------
- A new pod template gets a new ReplicaSet ``<deployment>-<hash of template>`` with revision
  max+1 (annotation deployment.kubernetes.io/revision on it and on the Deployment), owned by
  the Deployment (ownerReferences) and labelled pod-template-hash. A template equal to an
  older ReplicaSet's (a rollback: ``kubectl rollout undo`` patches the template back) reuses
  that ReplicaSet, which gets the new, highest revision and records its earlier ones in
  deployment.kubernetes.io/revision-history. Beyond revisionHistoryLimit old sets are deleted.
- A rolling update with maxSurge 1 and maxUnavailable 0, whatever spec.strategy says: one new
  pod is created, becomes ready, one old pod goes, and so on; each step is a MODIFIED event.
  A whole rollout takes ``rollout_seconds`` (0: every step at once, published as one event).
- A pod whose image tag contains "bad" never becomes ready; when spec.progressDeadlineSeconds
  pass without progress, condition Progressing turns False, reason ProgressDeadlineExceeded.
  The old pods keep serving meanwhile, as in a real cluster.
- status: observedGeneration, replicas, updatedReplicas, readyReplicas, availableReplicas,
  unavailableReplicas (zero counts omitted, as the real API does); conditions Available
  (MinimumReplicasAvailable / MinimumReplicasUnavailable) and Progressing (ReplicaSetUpdated,
  NewReplicaSetAvailable, ProgressDeadlineExceeded; DeploymentPaused while spec.paused).

Services
--------
``GET {url}/_services/{namespace}/{deployment}/health`` (``service_url() + "/health"``; also
``/healthz``) answers as the pods of the ReplicaSet with the most ready pods (ties go to the
newer revision) would: 200 ``{"status": "healthy", "version": "<tag>", "image": ...}``, or 503
``{"status": "unhealthy", ...}`` when an image tag contains "unhealthy"; 503 ``{"status":
"unavailable"}`` without ready pods; 404 for an unknown Deployment. ``<tag>`` is the image tag
of the first container: the part after the last ":" (a ":" before a "/" is a registry port;
no tag means "latest"). No token is needed there.

Faults on demand: ``cluster.fail_next(503, times=2, path_prefix="/apis")``.

Not simulated: pods, Services, Events, the scale subresource, server-side apply, YAML and
protobuf bodies, dryRun, managedFields, finalizers and graceful deletion, the Recreate
strategy, watch bookmarks, objects leaving a watch's labelSelector (not sent as DELETED),
consistent paging snapshots, and persistence: all state lives in memory.
"""

from __future__ import annotations

import argparse
import bisect
import hmac
import itertools
import json
import logging
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from heapq import heappop, heappush
from pathlib import Path
from typing import Any, TextIO

import yaml

from . import objects
from .objects import (
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    REVISION,
    REVISION_HISTORY,
    TEMPLATE_HASH_LABEL,
    ApiError,
    Selector,
    clone,
    image_tag,
    not_found,
    now_rfc3339,
    template_images,
    without_hash_label,
)
from .patch import PatchError, apply_patch
from .server import SimHTTPServer

logger = logging.getLogger(__name__)

DEPLOYMENTS = "deployments"
REPLICASETS = "replicasets"
KINDS = {DEPLOYMENTS: "Deployment", REPLICASETS: "ReplicaSet"}

# Substrings of an image tag that decide how the simulated pods behave.
NEVER_READY_MARK = "bad"
UNHEALTHY_MARK = "unhealthy"

Key = tuple[str, str]


@dataclass
class _Rollout:
    """What the controller remembers about one Deployment; not visible through the API."""

    replicasets: list[str] = field(default_factory=list)  # owned ReplicaSets, oldest first
    new_replicaset: str | None = None
    last_progress: float = 0.0  # time.monotonic() of the last step forward
    due: float | None = None  # the visit the controller has scheduled, if any
    timed_out: bool = False


@dataclass
class _Event:
    resource_version: int
    resource: str
    namespace: str
    name: str
    labels: dict[str, str]
    line: bytes


@dataclass(eq=False)
class Watch:
    """One open watch request. The HTTP handler drains ``lines`` via next_watch_lines()."""

    resource: str
    namespace: str | None
    selector: Selector
    wakeup: threading.Condition
    lines: deque[bytes] = field(default_factory=deque)
    closed: bool = False

    def accepts(self, event: _Event) -> bool:
        if self.namespace is not None and event.namespace != self.namespace:
            return False
        return self.selector.matches(event.namespace, event.name, event.labels)


@dataclass
class _Fault:
    status: int
    times: int
    method: str | None
    path_prefix: str | None


def _event_line(event_type: str, obj: dict) -> bytes:
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"


def _pods(replicaset: dict) -> tuple[int, int]:
    """(pods, ready pods) of a ReplicaSet. Pods are created the moment they are wanted."""
    return replicaset["spec"]["replicas"], replicaset["status"].get("readyReplicas", 0)


def _revision(obj: dict) -> int:
    return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))


def _set_count(status: dict, name: str, value: int) -> None:
    # The real API omits zero counts (omitempty); clients must cope with None.
    if value:
        status[name] = value
    else:
        status.pop(name, None)


class SimCluster:
    """The in-memory cluster: object store, watches, deployment controller and HTTP server.

    All state sits behind one lock. The controller and every watch wait on their own
    Condition bound to that lock, so an event wakes only the watches that want it.
    """

    def __init__(
        self,
        rollout_seconds: float = 2.0,
        *,
        progress_deadline_seconds: int = 600,
        token: str | None = None,
        history_size: int = 10_000,
        watch_timeout_seconds: float = 1800.0,
    ) -> None:
        self.rollout_seconds = rollout_seconds
        self.progress_deadline_seconds = progress_deadline_seconds
        self.token = token
        self.history_size = history_size
        self.watch_timeout_seconds = watch_timeout_seconds
        self.host = "127.0.0.1"
        self.port = 0
        self.started_at = now_rfc3339()
        self._lock = threading.Lock()
        self._controller_wakeup = threading.Condition(self._lock)
        self._store: dict[str, dict[Key, dict]] = {DEPLOYMENTS: {}, REPLICASETS: {}}
        self._rollouts: dict[Key, _Rollout] = {}
        self._resource_version = 0
        self._history: list[_Event] = []
        self._compacted_version = 0  # events up to this resourceVersion are forgotten
        self._watches_by_name: dict[tuple[str, str], list[Watch]] = {}
        self._watches: dict[str, list[Watch]] = {DEPLOYMENTS: [], REPLICASETS: []}
        self._schedule: list[tuple[float, int, Key]] = []
        self._sequence = itertools.count()
        self._faults: list[_Fault] = []
        self._stopping = False
        self._server: SimHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the API server, for kubernetes.client.Configuration(host=...)."""
        return f"http://{self.host}:{self.port}"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> SimCluster:
        """Bind, then run the HTTP server and the controller in daemon threads."""
        self._server = SimHTTPServer((host, port), self)
        self.host, self.port = host, self._server.server_address[1]
        self._threads = [
            threading.Thread(
                target=self._run_controller, name="simcluster-controller", daemon=True
            ),
            threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="simcluster-http",
                daemon=True,
            ),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """End open watches, close connections, stop the threads. Safe to call twice."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._controller_wakeup.notify_all()
            for watch in self._all_watches():
                watch.closed = True
                watch.wakeup.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> SimCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- seeding and inspection (Python API) -------------------------------------------------

    def add_deployment(
        self,
        namespace: str,
        name: str,
        image: str,
        replicas: int = 2,
        labels: Mapping[str, str] | None = None,
        *,
        sidecars: Sequence[Mapping[str, Any]] = (),
        annotations: Mapping[str, str] | None = None,
        progress_deadline_seconds: int | None = None,
    ) -> dict[str, Any]:
        """Seed a Deployment that is already rolled out: revision 1, all replicas available.

        The main container is named after the Deployment and runs ``image``; ``sidecars``
        are further containers (``{"name": ..., "image": ...}``). ``labels`` go on the
        Deployment and its pods; the selector is ``app=<name>``. An image whose tag contains
        "bad" is seeded as a rollout stuck at its first pod. Returns the stored object.
        """
        pod_labels = {**(labels or {}), "app": name}
        spec: dict[str, Any] = {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": dict(pod_labels)},
                "spec": {"containers": [{"name": name, "image": image}, *map(dict, sidecars)]},
            },
        }
        if progress_deadline_seconds is not None:
            spec["progressDeadlineSeconds"] = progress_deadline_seconds
        body = {
            "metadata": {
                "name": name,
                "labels": pod_labels,
                "annotations": dict(annotations or {}),
            },
            "spec": spec,
        }
        with self._lock:
            key = self._create_deployment(namespace, clone(body))
            self._reconcile(key, settle=True)
            return clone(self._store[DEPLOYMENTS][key])

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        """A copy of one stored object; ApiError 404 if there is none."""
        with self._lock:
            return clone(self._require(resource, namespace, name))

    def replicasets_of(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The ReplicaSets a Deployment owns, oldest first."""
        with self._lock:
            self._require(DEPLOYMENTS, namespace, name)
            rollout = self._rollouts[(namespace, name)]
            return [clone(self._store[REPLICASETS][(namespace, n)]) for n in rollout.replicasets]

    def service_url(self, namespace: str, name: str) -> str:
        """Base URL of the simulated service behind a Deployment; health is at ``/health``."""
        return f"{self.url}/_services/{namespace}/{name}"

    def health_url(self, namespace: str, name: str) -> str:
        return f"{self.service_url(namespace, name)}/health"

    def fail_next(
        self,
        status: int = 500,
        *,
        times: int = 1,
        method: str | None = None,
        path_prefix: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (API or service)."""
        with self._lock:
            self._faults.append(_Fault(status, times, method and method.upper(), path_prefix))

    # -- used by the HTTP server -------------------------------------------------------------

    def authorized(self, authorization: str | None) -> bool:
        if self.token is None:
            return True
        return hmac.compare_digest((authorization or "").encode(), f"Bearer {self.token}".encode())

    def take_fault(self, method: str, path: str) -> int | None:
        with self._lock:
            for fault in self._faults:
                if fault.method not in (None, method):
                    continue
                if fault.path_prefix is not None and not path.startswith(fault.path_prefix):
                    continue
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault.status
        return None

    def list_document(
        self,
        resource: str,
        namespace: str | None,
        selector: Selector,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> dict[str, Any]:
        """A DeploymentList / ReplicaSetList as the API returns it."""
        try:
            offset = int(continue_token) if continue_token else 0
        except ValueError:
            raise ApiError(400, "BadRequest", "invalid continue token") from None
        with self._lock:
            selected = self._select(resource, namespace, selector)
            page = selected[offset : offset + limit] if limit else selected[offset:]
            items = [clone(obj) for obj in page]
            metadata: dict[str, Any] = {"resourceVersion": str(self._resource_version)}
        for item in items:
            # Items of a typed list carry no kind/apiVersion of their own.
            item.pop("kind", None)
            item.pop("apiVersion", None)
        if limit and offset + limit < len(selected):
            metadata["continue"] = str(offset + limit)
            metadata["remainingItemCount"] = len(selected) - offset - limit
        return {
            "kind": f"{KINDS[resource]}List",
            "apiVersion": "apps/v1",
            "metadata": metadata,
            "items": items,
        }

    def namespace_names(self) -> list[str]:
        with self._lock:
            return sorted({"default"} | {namespace for namespace, _ in self._store[DEPLOYMENTS]})

    def create_deployment(self, namespace: str, body: Any) -> dict[str, Any]:
        with self._lock:
            key = self._create_deployment(namespace, body)
            self._schedule_at(key, time.monotonic())
            return clone(self._store[DEPLOYMENTS][key])

    def patch_deployment(
        self, namespace: str, name: str, content_type: str, patch: Any
    ) -> dict[str, Any]:
        with self._lock:
            current = self._require(DEPLOYMENTS, namespace, name)
            try:
                desired = apply_patch(content_type, current, patch)
            except LookupError:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: application/json-patch+json, application/merge-patch+json, "
                    f"application/strategic-merge-patch+json (got {content_type!r})",
                ) from None
            except PatchError as error:
                code, reason = (400, "BadRequest") if error.malformed else (422, "Invalid")
                raise ApiError(code, reason, str(error)) from None
            self._update_deployment((namespace, name), desired)
            return clone(current)

    def replace_deployment(self, namespace: str, name: str, body: Any) -> dict[str, Any]:
        with self._lock:
            current = self._require(DEPLOYMENTS, namespace, name)
            self._update_deployment((namespace, name), body)
            return clone(current)

    def delete_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        """Delete a Deployment and its ReplicaSets at once (foreground cascade, no grace)."""
        with self._lock:
            deployment = self._require(DEPLOYMENTS, namespace, name)
            rollout = self._rollouts.pop((namespace, name))
            for replicaset_name in rollout.replicasets:
                replicaset = self._store[REPLICASETS].pop((namespace, replicaset_name))
                self._commit(REPLICASETS, replicaset, "DELETED")
            del self._store[DEPLOYMENTS][(namespace, name)]
            self._commit(DEPLOYMENTS, deployment, "DELETED")
            uid = deployment["metadata"]["uid"]
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": "apps", "kind": DEPLOYMENTS, "uid": uid},
        }

    def service_health(self, namespace: str, name: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of the simulated service's health endpoint."""
        with self._lock:
            if (namespace, name) not in self._store[DEPLOYMENTS]:
                return 404, {"status": "unknown", "message": f"no service {namespace}/{name}"}
            serving, best = None, (0, 0)
            for replicaset_name in self._rollouts[(namespace, name)].replicasets:
                replicaset = self._store[REPLICASETS][(namespace, replicaset_name)]
                rank = (_pods(replicaset)[1], _revision(replicaset))
                if rank[0] and rank > best:
                    serving, best = replicaset, rank
            if serving is None:
                return 503, {"status": "unavailable", "version": None, "message": "no ready pods"}
            images = template_images(serving["spec"]["template"])
        body = {"status": "healthy", "version": image_tag(images[0]), "image": images[0]}
        if any(UNHEALTHY_MARK in image_tag(image) for image in images):
            body["status"] = "unhealthy"
            return 503, body
        return 200, body

    def open_watch(
        self, resource: str, namespace: str | None, selector: Selector, resource_version: str | None
    ) -> Watch:
        """Register a watch, queueing the events it must see first (initial state or replay)."""
        with self._lock:
            watch = Watch(resource, namespace, selector, threading.Condition(self._lock))
            if resource_version in (None, "", "0"):
                for obj in self._select(resource, namespace, selector):
                    watch.lines.append(_event_line("ADDED", obj))
            else:
                try:
                    since = int(resource_version)
                except ValueError:
                    raise ApiError(
                        400, "BadRequest", f'invalid resource version "{resource_version}"'
                    ) from None
                if since < self._compacted_version:
                    # Like a compacted etcd: the client has to list again.
                    expired = ApiError(
                        410,
                        "Expired",
                        f"too old resource version: {since} ({self._compacted_version + 1})",
                    )
                    watch.lines.append(_event_line("ERROR", expired.status()))
                    watch.closed = True
                    return watch
                start = bisect.bisect_right(self._history, since, key=lambda e: e.resource_version)
                for event in self._history[start:]:
                    if event.resource == resource and watch.accepts(event):
                        watch.lines.append(event.line)
            watch.closed = self._stopping
            name = selector.exact_name
            if name is not None:
                self._watches_by_name.setdefault((resource, name), []).append(watch)
            else:
                self._watches[resource].append(watch)
            return watch

    def next_watch_lines(self, watch: Watch, timeout: float) -> list[bytes] | None:
        """Wait up to ``timeout`` for events: the lines, [] on timeout, None once closed."""
        with self._lock:
            if not watch.lines and not watch.closed:
                watch.wakeup.wait(timeout)
            if watch.lines:
                lines = list(watch.lines)
                watch.lines.clear()
                return lines
            return None if watch.closed else []

    def close_watch(self, watch: Watch) -> None:
        with self._lock:
            watch.closed = True
            name = watch.selector.exact_name
            group = (
                self._watches_by_name.get((watch.resource, name), [])
                if name is not None
                else self._watches[watch.resource]
            )
            if watch in group:
                group.remove(watch)
            if name is not None and not group:
                self._watches_by_name.pop((watch.resource, name), None)

    # -- store internals (lock held) ---------------------------------------------------------

    def _all_watches(self) -> Iterable[Watch]:
        yield from itertools.chain(*self._watches.values(), *self._watches_by_name.values())

    def _require(self, resource: str, namespace: str, name: str) -> dict:
        obj = self._store[resource].get((namespace, name))
        if obj is None:
            raise not_found(resource, name)
        return obj

    def _select(self, resource: str, namespace: str | None, selector: Selector) -> list[dict]:
        return [
            obj
            for (obj_namespace, obj_name), obj in sorted(self._store[resource].items())
            if (namespace is None or obj_namespace == namespace)
            and selector.matches(obj_namespace, obj_name, obj["metadata"].get("labels") or {})
        ]

    def _commit(self, resource: str, obj: dict, event_type: str) -> None:
        """Give the object a new resourceVersion and tell the watches that want it."""
        self._resource_version += 1
        metadata = obj["metadata"]
        metadata["resourceVersion"] = str(self._resource_version)
        line = _event_line(event_type, obj)
        event = _Event(
            self._resource_version,
            resource,
            metadata["namespace"],
            metadata["name"],
            dict(metadata.get("labels") or {}),
            line,
        )
        self._history.append(event)
        if len(self._history) > 2 * self.history_size:
            # Trim in bulk so that appending stays cheap; keep at least history_size events.
            cut = len(self._history) - self.history_size
            self._compacted_version = self._history[cut - 1].resource_version
            del self._history[:cut]
        for watch in itertools.chain(
            self._watches_by_name.get((resource, event.name), ()), self._watches[resource]
        ):
            if watch.accepts(event):
                watch.lines.append(line)
                watch.wakeup.notify()

    def _create_deployment(self, namespace: str, body: Any) -> Key:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be a Deployment object")
        metadata = body.get("metadata") or {}
        name = metadata.get("name")
        if not name and metadata.get("generateName"):
            name = metadata["generateName"] + objects.template_hash({"n": str(uuid.uuid4())})[:5]
        objects.validate_name("Deployment", name)
        if metadata.get("namespace", namespace) != namespace:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        key = (namespace, name)
        if key in self._store[DEPLOYMENTS]:
            raise ApiError(
                409,
                "AlreadyExists",
                f'deployments.apps "{name}" already exists',
                {"name": name, "group": "apps", "kind": DEPLOYMENTS},
            )
        spec = body.get("spec")
        if isinstance(spec, dict):
            objects.default_deployment_spec(spec, self.progress_deadline_seconds)
        objects.validate_deployment_spec(name, spec)
        deployment: dict[str, Any] = {
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "creationTimestamp": now_rfc3339(),
            },
            "spec": spec,
            "status": {},
        }
        for field_name in ("labels", "annotations"):
            if metadata.get(field_name):
                deployment["metadata"][field_name] = dict(metadata[field_name])
        self._store[DEPLOYMENTS][key] = deployment
        self._rollouts[key] = _Rollout()
        self._commit(DEPLOYMENTS, deployment, "ADDED")
        return key

    def _update_deployment(self, key: Key, desired: Any) -> None:
        """Store a new desired state (from PATCH or PUT); status and identity stay the server's."""
        namespace, name = key
        current = self._store[DEPLOYMENTS][key]
        if not isinstance(desired, dict):
            raise ApiError(422, "Invalid", "the result is not a Deployment object")
        metadata = desired.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        if metadata.get("name", name) != name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({metadata.get('name')}) does not match the name on "
                f"the URL ({name})",
            )
        if metadata.get("namespace", namespace) != namespace:
            raise ApiError(
                400, "BadRequest", "the namespace of the object does not match the URL's"
            )
        version = metadata.get("resourceVersion")
        if version and version != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on deployments.apps "{name}": the object has '
                f"been modified; please apply your changes to the latest version and try again",
                {"name": name, "group": "apps", "kind": DEPLOYMENTS},
            )
        spec = desired.get("spec")
        if isinstance(spec, dict):
            objects.default_deployment_spec(spec, self.progress_deadline_seconds)
        objects.validate_deployment_spec(name, spec)
        if spec["selector"] != current["spec"]["selector"]:
            raise objects.invalid(
                "Deployment",
                name,
                [
                    f"spec.selector: Invalid value: {json.dumps(spec['selector'])}: field is immutable"
                ],
            )
        labels = metadata.get("labels") or {}
        annotations = dict(metadata.get("annotations") or {})
        if not isinstance(labels, dict):
            raise objects.invalid("Deployment", name, ["metadata.labels: must be a map"])
        revision = (current["metadata"].get("annotations") or {}).get(REVISION)
        if revision:
            annotations[REVISION] = revision  # owned by the controller, not by clients
        spec_changed = spec != current["spec"]
        meta_changed = labels != (current["metadata"].get("labels") or {}) or annotations != (
            current["metadata"].get("annotations") or {}
        )
        if not (spec_changed or meta_changed):
            return  # like the real server: a no-op write keeps the resourceVersion
        for field_name, value in (("labels", labels), ("annotations", annotations)):
            if value:
                current["metadata"][field_name] = dict(value)
            else:
                current["metadata"].pop(field_name, None)
        if spec_changed:
            current["spec"] = spec
            current["metadata"]["generation"] += 1
        self._commit(DEPLOYMENTS, current, "MODIFIED")
        if spec_changed:
            self._schedule_at(key, time.monotonic())

    # -- the deployment controller (lock held) -----------------------------------------------

    def _schedule_at(self, key: Key, when: float) -> None:
        self._rollouts[key].due = when
        heappush(self._schedule, (when, next(self._sequence), key))
        self._controller_wakeup.notify()

    def _run_controller(self) -> None:
        with self._lock:
            while not self._stopping:
                if not self._schedule:
                    self._controller_wakeup.wait()
                    continue
                when, _, key = self._schedule[0]
                delay = when - time.monotonic()
                if delay > 0:
                    self._controller_wakeup.wait(delay)
                    continue
                heappop(self._schedule)
                rollout = self._rollouts.get(key)
                if rollout is None or rollout.due != when:
                    continue  # deleted, or a later schedule superseded this visit
                rollout.due = None
                try:
                    self._reconcile(key)
                except Exception:
                    logger.exception("simcluster: reconciling %s/%s failed", *key)
                # Let request threads take the lock between two visits.
                self._controller_wakeup.wait(0)

    def _step_interval(self, deployment: dict) -> float:
        # Two steps per pod (create it, then it is ready and an old one goes).
        return self.rollout_seconds / (2 * max(1, deployment["spec"]["replicas"]))

    def _reconcile(self, key: Key, settle: bool = False) -> None:
        """One visit of the controller: observe a new spec, take the next rollout step(s).

        Each step is published as its own MODIFIED event, except with ``settle`` (seeding)
        or rollout_seconds=0: then all steps are taken at once and published as one.
        """
        deployment = self._store[DEPLOYMENTS].get(key)
        if deployment is None:
            return
        rollout = self._rollouts[key]
        now = time.monotonic()
        interval = 0.0 if settle else self._step_interval(deployment)
        if deployment["status"].get("observedGeneration", 0) < deployment["metadata"]["generation"]:
            self._observe(key, deployment, rollout, now)
            if interval > 0:
                self._schedule_at(key, now + interval)
                return
        if deployment["spec"].get("paused"):
            return
        unpublished = False
        while True:
            outcome = self._step(key, deployment, rollout)
            if outcome == "progress":
                rollout.last_progress, rollout.timed_out = now, False
                if not self._settled(key, deployment, rollout):
                    if interval == 0:
                        unpublished = True
                        continue
                    self._publish_status(key, deployment, rollout, "progressing")
                    self._schedule_at(key, now + interval)
                    return
                # The last step: report completion in the same event, as the real
                # controller's immediate resync would a moment later.
                outcome = "done"
            if outcome == "done":
                self._publish_status(key, deployment, rollout, "complete")
                self._prune_history(key, deployment, rollout)
                return
            if unpublished:
                self._publish_status(key, deployment, rollout, "progressing")
            # Stuck: the progress deadline counts from the last step forward.
            deadline = rollout.last_progress + deployment["spec"]["progressDeadlineSeconds"]
            if now < deadline:
                self._schedule_at(key, deadline)
            elif not rollout.timed_out:
                rollout.timed_out = True
                self._publish_status(key, deployment, rollout, "timed_out")
            return

    def _observe(self, key: Key, deployment: dict, rollout: _Rollout, now: float) -> None:
        """React to a new generation: pick or create the ReplicaSet for the template."""
        namespace, _ = key
        spec = deployment["spec"]
        deployment["status"]["observedGeneration"] = deployment["metadata"]["generation"]
        rollout.last_progress = now
        if spec.get("paused"):
            self._publish_status(key, deployment, rollout, "paused")
            return
        template = without_hash_label(spec["template"])
        current = self._replicaset(namespace, rollout.new_replicaset)
        if current is not None and without_hash_label(current["spec"]["template"]) == template:
            self._publish_status(key, deployment, rollout, None)
            return
        owned = [self._store[REPLICASETS][(namespace, n)] for n in rollout.replicasets]
        revision = 1 + max((_revision(rs) for rs in owned), default=0)
        match = next(
            (rs for rs in owned if without_hash_label(rs["spec"]["template"]) == template), None
        )
        if match is None:
            match = self._create_replicaset(key, deployment, revision, template)
        else:
            # A rollback: the old ReplicaSet becomes the newest revision.
            annotations = match["metadata"]["annotations"]
            history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h]
            annotations[REVISION_HISTORY] = ",".join([*history, annotations[REVISION]])
            annotations[REVISION] = str(revision)
            self._commit(REPLICASETS, match, "MODIFIED")
        rollout.new_replicaset = match["metadata"]["name"]
        rollout.timed_out = False
        deployment["metadata"].setdefault("annotations", {})[REVISION] = str(revision)
        self._publish_status(key, deployment, rollout, "progressing")

    def _replicaset(self, namespace: str, name: str | None) -> dict | None:
        return None if name is None else self._store[REPLICASETS].get((namespace, name))

    def _create_replicaset(self, key: Key, deployment: dict, revision: int, template: dict) -> dict:
        namespace, name = key
        pod_hash = objects.template_hash(template)
        template = clone(template)
        template.setdefault("metadata", {}).setdefault("labels", {})[TEMPLATE_HASH_LABEL] = pod_hash
        selector = clone(deployment["spec"]["selector"])
        selector.setdefault("matchLabels", {})[TEMPLATE_HASH_LABEL] = pod_hash
        desired = deployment["spec"]["replicas"]
        replicaset = {
            "kind": "ReplicaSet",
            "apiVersion": "apps/v1",
            "metadata": {
                "name": f"{name}-{pod_hash}",
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "creationTimestamp": now_rfc3339(),
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {
                    REVISION: str(revision),
                    DESIRED_REPLICAS: str(desired),
                    MAX_REPLICAS: str(desired + 1),
                },
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": name,
                        "uid": deployment["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
            "status": {"replicas": 0, "observedGeneration": 1},
        }
        self._store[REPLICASETS][(namespace, replicaset["metadata"]["name"])] = replicaset
        self._rollouts[key].replicasets.append(replicaset["metadata"]["name"])
        self._commit(REPLICASETS, replicaset, "ADDED")
        return replicaset

    def _scale(self, replicaset: dict, pods: int, ready: int) -> None:
        if replicaset["spec"]["replicas"] != pods:
            replicaset["spec"]["replicas"] = pods
            replicaset["metadata"]["generation"] += 1
        status = {"replicas": pods}
        _set_count(status, "fullyLabeledReplicas", pods)
        _set_count(status, "readyReplicas", ready)
        _set_count(status, "availableReplicas", ready)
        status["observedGeneration"] = replicaset["metadata"]["generation"]
        replicaset["status"] = status
        self._commit(REPLICASETS, replicaset, "MODIFIED")

    def _step(self, key: Key, deployment: dict, rollout: _Rollout) -> str:
        """One step of a rolling update with maxSurge 1, maxUnavailable 0.

        Returns "progress", "stuck" (a new pod that will not become ready) or "done".
        """
        namespace = key[0]
        desired = deployment["spec"]["replicas"]
        new = self._store[REPLICASETS][(namespace, rollout.new_replicaset)]
        olds = [
            rs
            for rs in (self._store[REPLICASETS][(namespace, n)] for n in rollout.replicasets)
            if rs is not new and rs["spec"]["replicas"] > 0
        ]
        for old in olds:
            pods, ready = _pods(old)
            if ready < pods:
                # Old pods that never became ready go first: they serve nobody.
                self._scale(old, ready, ready)
                return "progress"
        pods, ready = _pods(new)
        old_pods = sum(_pods(old)[0] for old in olds)
        if pods > desired:
            self._scale(new, desired, min(ready, desired))
            return "progress"
        if ready < pods:
            images = template_images(new["spec"]["template"])
            if any(NEVER_READY_MARK in image_tag(image) for image in images):
                return "stuck"
            self._scale(new, pods, ready + 1)
            if old_pods and pods + old_pods > desired:
                self._scale_down_one(olds[0])
            return "progress"
        if pods < desired:
            self._scale(new, pods + 1, ready)
            return "progress"
        if old_pods:
            self._scale_down_one(olds[0])
            return "progress"
        return "done"

    def _settled(self, key: Key, deployment: dict, rollout: _Rollout) -> bool:
        """Whether all desired pods run the new template, ready, and no old pod is left."""
        namespace = key[0]
        desired = deployment["spec"]["replicas"]
        for name in rollout.replicasets:
            pods, ready = _pods(self._store[REPLICASETS][(namespace, name)])
            if name == rollout.new_replicaset:
                if not pods == ready == desired:
                    return False
            elif pods:
                return False
        return True

    def _scale_down_one(self, replicaset: dict) -> None:
        pods, ready = _pods(replicaset)
        self._scale(replicaset, pods - 1, min(ready, pods - 1))

    def _publish_status(
        self, key: Key, deployment: dict, rollout: _Rollout, progress: str | None
    ) -> None:
        """Recompute status from the ReplicaSets; commit (one MODIFIED event) if it changed."""
        namespace = key[0]
        status = deployment["status"]
        before = clone(status)
        sets = [self._store[REPLICASETS][(namespace, n)] for n in rollout.replicasets]
        new = self._replicaset(namespace, rollout.new_replicaset)
        pods = sum(_pods(rs)[0] for rs in sets)
        ready = sum(_pods(rs)[1] for rs in sets)
        _set_count(status, "replicas", pods)
        _set_count(status, "updatedReplicas", _pods(new)[0] if new else 0)
        _set_count(status, "readyReplicas", ready)
        _set_count(status, "availableReplicas", ready)
        _set_count(status, "unavailableReplicas", max(0, pods - ready))
        spec = deployment["spec"]
        now = now_rfc3339()
        if ready >= spec["replicas"] - objects.max_unavailable(spec):
            objects.set_condition(
                status,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                now,
            )
        else:
            objects.set_condition(
                status,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                now,
            )
        rs_name = rollout.new_replicaset
        if progress == "progressing":
            objects.set_condition(
                status,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{rs_name}" is progressing.',
                now,
                touch=True,
            )
        elif progress == "complete":
            objects.set_condition(
                status,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
                now,
            )
        elif progress == "timed_out":
            objects.set_condition(
                status,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
                now,
            )
        elif progress == "paused":
            objects.set_condition(
                status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", now
            )
        if status != before:
            self._commit(DEPLOYMENTS, deployment, "MODIFIED")

    def _prune_history(self, key: Key, deployment: dict, rollout: _Rollout) -> None:
        """Delete idle old ReplicaSets beyond spec.revisionHistoryLimit, oldest first."""
        namespace = key[0]
        limit = deployment["spec"].get("revisionHistoryLimit", 10)
        idle = sorted(
            (
                self._store[REPLICASETS][(namespace, n)]
                for n in rollout.replicasets
                if n != rollout.new_replicaset
            ),
            key=_revision,
        )
        idle = [rs for rs in idle if rs["spec"]["replicas"] == 0]
        for replicaset in idle[: max(0, len(idle) - limit)]:
            name = replicaset["metadata"]["name"]
            del self._store[REPLICASETS][(namespace, name)]
            rollout.replicasets.remove(name)
            self._commit(REPLICASETS, replicaset, "DELETED")


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    rollout_seconds: float = 2.0,
    *,
    progress_deadline_seconds: int = 600,
    token: str | None = None,
    history_size: int = 10_000,
    watch_timeout_seconds: float = 1800.0,
) -> SimCluster:
    """Start a simulated cluster in background threads and return it (call ``.stop()``).

    ``port=0`` picks a free port (see ``.port`` and ``.url``). ``progress_deadline_seconds``
    is the default spec.progressDeadlineSeconds of new Deployments. With ``token`` set, API
    requests must carry ``Authorization: Bearer <token>``.
    """
    cluster = SimCluster(
        rollout_seconds,
        progress_deadline_seconds=progress_deadline_seconds,
        token=token,
        history_size=history_size,
        watch_timeout_seconds=watch_timeout_seconds,
    )
    return cluster.start(host, port)


# -- command line --------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``main``; the ``simcluster`` management command adds the same ones."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--rollout-seconds", type=float, default=2.0, help="duration of one rollout (default 2)"
    )
    parser.add_argument(
        "--progress-deadline-seconds",
        type=int,
        default=600,
        help="default spec.progressDeadlineSeconds of new Deployments (default 600)",
    )
    parser.add_argument(
        "--token", default=None, help="require this bearer token (default: accept any)"
    )
    parser.add_argument(
        "--seed",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML file: {deployments: [{namespace, name, image, replicas, labels}]}",
    )
    parser.add_argument(
        "--deployment",
        action="append",
        default=[],
        metavar="NS/NAME=IMAGE[,REPLICAS]",
        help="seed one Deployment (repeatable)",
    )


def load_seed(path: str | Path) -> list[dict[str, Any]]:
    """Deployments to seed from a YAML file (a list, or a map with a ``deployments`` list)."""
    data = yaml.safe_load(Path(path).read_text()) or []
    items = data.get("deployments", []) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a list of deployments")
    for item in items:
        missing = {"namespace", "name", "image"} - set(item)
        if missing:
            raise ValueError(f"{path}: deployment {item!r} lacks {', '.join(sorted(missing))}")
    return items


def parse_deployment_option(text: str) -> dict[str, Any]:
    """``shop/web=registry.example/web:1.4.0,3`` -> add_deployment() arguments."""
    target, sep, image = text.partition("=")
    namespace, slash, name = target.partition("/")
    if not (sep and slash and namespace and name and image):
        raise ValueError(f"expected NS/NAME=IMAGE[,REPLICAS], got {text!r}")
    item: dict[str, Any] = {"namespace": namespace, "name": name, "image": image}
    image, comma, replicas = image.rpartition(",")
    if comma and replicas.isdigit():
        item.update(image=image, replicas=int(replicas))
    return item


def run(
    *,
    host: str = "127.0.0.1",
    port: int = 8001,
    rollout_seconds: float = 2.0,
    progress_deadline_seconds: int = 600,
    token: str | None = None,
    seed: Sequence[str] = (),
    deployment: Sequence[str] = (),
    out: TextIO | None = None,
    **_ignored: Any,
) -> int:
    """Serve until interrupted (Ctrl-C or SIGTERM). Takes the options of ``add_arguments``."""
    items = [item for path in seed for item in load_seed(path)]
    items += [parse_deployment_option(text) for text in deployment]
    cluster = serve(
        host,
        port,
        rollout_seconds,
        progress_deadline_seconds=progress_deadline_seconds,
        token=token,
    )
    stopped = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        for item in items:
            cluster.add_deployment(
                item["namespace"],
                item["name"],
                item["image"],
                replicas=item.get("replicas", 2),
                labels=item.get("labels"),
                sidecars=item.get("sidecars", ()),
            )
        lines = [
            f"simcluster: Kubernetes API at {cluster.url} "
            f"({'token required' if token else 'any bearer token'}), "
            f"rollouts take {rollout_seconds:g}s"
        ]
        lines += [
            f"  {item['namespace']}/{item['name']}  {item['image']}  "
            f"{cluster.health_url(item['namespace'], item['name'])}"
            for item in items
        ]
        out = out or sys.stdout
        out.write("\n".join(lines) + "\n")
        out.flush()
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        cluster.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run a simulated cluster in the foreground: ``python -m deployments.sim --help``."""
    parser = argparse.ArgumentParser(
        prog="simcluster", description="A simulated Kubernetes API server for demos and tests."
    )
    add_arguments(parser)
    options = parser.parse_args(argv)
    try:
        return run(**vars(options))
    except ValueError as error:
        parser.error(str(error))
        return 2
