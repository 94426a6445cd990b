"""HTTP front of the simulated cluster: routing, JSON answers and chunked watch streams.

The stdlib ThreadingHTTPServer runs one thread per connection with HTTP/1.1 keep-alive, which
is what the kubernetes client's urllib3 pool expects. Watch responses use chunked transfer
encoding written by hand, one chunk per event line, so the client's line reader sees each
event as soon as it happens.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .objects import ApiError, Selector

if TYPE_CHECKING:
    from .cluster import SimCluster

logger = logging.getLogger(__name__)

# How often an idle watch checks whether its client went away.
PEER_CHECK_SECONDS = 1.0

_FAULT_REASONS = {
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-simcluster",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}

APPS_GROUP = {
    "kind": "APIGroup",
    "apiVersion": "v1",
    "name": "apps",
    "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
    "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
}

APPS_RESOURCES = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": "apps/v1",
    "resources": [
        {
            "name": "deployments",
            "singularName": "deployment",
            "namespaced": True,
            "kind": "Deployment",
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            "shortNames": ["deploy"],
        },
        {
            "name": "deployments/status",
            "singularName": "",
            "namespaced": True,
            "kind": "Deployment",
            "verbs": ["get"],
        },
        {
            "name": "replicasets",
            "singularName": "replicaset",
            "namespaced": True,
            "kind": "ReplicaSet",
            "verbs": ["get", "list", "watch"],
            "shortNames": ["rs"],
        },
    ],
}

CORE_RESOURCES = {
    "kind": "APIResourceList",
    "groupVersion": "v1",
    "resources": [
        {
            "name": "namespaces",
            "singularName": "namespace",
            "namespaced": False,
            "kind": "Namespace",
            "verbs": ["get", "list"],
            "shortNames": ["ns"],
        }
    ],
}


def _truthy(value: str | None) -> bool:
    # The Python client sends booleans as "True"; Go's strconv.ParseBool takes all of these.
    return (value or "").lower() in ("1", "t", "true")


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def _frame(lines: list[bytes], chunked: bool) -> bytes:
    if not chunked:
        return b"".join(lines)
    return b"".join(b"%x\r\n%s\r\n" % (len(line), line) for line in lines)


class SimHTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server that knows its cluster and can cut its open connections."""

    daemon_threads = True
    # Benchmarks open hundreds of watches at once; the default backlog of 5 drops SYNs.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], cluster: SimCluster) -> None:
        self.cluster = cluster
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, SimRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections so they end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class SimRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "simcluster"
    server: SimHTTPServer

    def setup(self) -> None:
        super().setup()
        # Small answers and single watch events must leave now, not wait for Nagle.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._streaming = False

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # -- plumbing ------------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        is_service = path.startswith("/_services/")
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._send_json(400, ApiError(400, "BadRequest", "unreadable request body").status())
            return
        cluster = self.server.cluster
        try:
            fault = cluster.take_fault(method, path)
            if fault is not None:
                reason = _FAULT_REASONS.get(fault, _phrase(fault).replace(" ", ""))
                raise ApiError(fault, reason, f"injected fault: {fault}")
            if not is_service and not cluster.authorized(self.headers.get("Authorization")):
                raise ApiError(401, "Unauthorized", "Unauthorized")
            self._route(method, path, query, body)
        except ApiError as error:
            payload = (
                {"status": "error", "message": error.message} if is_service else error.status()
            )
            self._send_json(error.code, payload)
        except Exception:
            logger.exception("simcluster: %s %s failed", method, self.path)
            self._send_json(500, ApiError(500, "InternalError", "internal error").status())

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _head(self, code: int, headers: list[str]) -> bytes:
        lines = [f"HTTP/1.1 {code} {_phrase(code)}", *headers, "Cache-Control: no-cache, private"]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send_json(self, code: int, payload: Any) -> None:
        if self._streaming:
            # Too late for an error answer: the watch stream has begun.
            self.close_connection = True
            return
        body = json.dumps(payload, separators=(",", ":")).encode()
        head = self._head(code, ["Content-Type: application/json", f"Content-Length: {len(body)}"])
        # One write: head and body in the same segment.
        self.wfile.write(head + body)
        self.log_request(code)

    @staticmethod
    def _json_body(body: bytes) -> Any:
        try:
            return json.loads(body or b"null")
        except ValueError:
            raise ApiError(400, "BadRequest", "the request body is not valid JSON") from None

    # -- routes --------------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        cluster = self.server.cluster
        parts = path.strip("/").split("/")
        if parts[0] == "_services":
            if method == "GET" and len(parts) == 4 and parts[3] in ("health", "healthz"):
                self._send_json(*cluster.service_health(parts[1], parts[2]))
                return
            raise ApiError(404, "NotFound", f"no endpoint {path}")
        discovery = {
            "/version": VERSION,
            "/api": {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{cluster.host}:{cluster.port}"}
                ],
            },
            "/api/v1": CORE_RESOURCES,
            "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [APPS_GROUP]},
            "/apis/apps": APPS_GROUP,
            "/apis/apps/v1": APPS_RESOURCES,
        }
        if path in discovery:
            self._only(method, "GET")
            self._send_json(200, discovery[path])
            return
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) in (3, 4):
            self._only(method, "GET")
            self._namespaces(parts[3] if len(parts) == 4 else None)
            return
        if parts[:3] == ["apis", "apps", "v1"]:
            rest, namespace = parts[3:], None
            if len(rest) >= 3 and rest[0] == "namespaces":
                namespace, rest = rest[1], rest[2:]
            if rest and rest[0] in ("deployments", "replicasets"):
                resource = rest[0]
                if len(rest) == 1:
                    self._collection(method, resource, namespace, query, body)
                    return
                if namespace is not None and len(rest) == 2:
                    self._item(method, resource, namespace, rest[1], body)
                    return
                if namespace is not None and rest[1:] and rest[2:] == ["status"]:
                    self._only(method, "GET")
                    if resource == "deployments":
                        self._send_json(200, cluster.get(resource, namespace, rest[1]))
                        return
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    @staticmethod
    def _only(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )

    def _namespaces(self, name: str | None) -> None:
        cluster = self.server.cluster
        names = cluster.namespace_names()

        def document(namespace: str) -> dict[str, Any]:
            return {
                "kind": "Namespace",
                "apiVersion": "v1",
                "metadata": {"name": namespace, "creationTimestamp": cluster.started_at},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }

        if name is None:
            items = [document(n) for n in names]
            self._send_json(
                200, {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {}, "items": items}
            )
        elif name in names:
            self._send_json(200, document(name))
        else:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{name}" not found',
                {"name": name, "kind": "namespaces"},
            )

    def _collection(
        self,
        method: str,
        resource: str,
        namespace: str | None,
        query: dict[str, str],
        body: bytes,
    ) -> None:
        cluster = self.server.cluster
        if method == "POST" and resource == "deployments" and namespace is not None:
            self._send_json(201, cluster.create_deployment(namespace, self._json_body(body)))
            return
        self._only(method, "GET")
        selector = Selector.parse(query.get("labelSelector"), query.get("fieldSelector"))
        if _truthy(query.get("watch")):
            self._watch(resource, namespace, selector, query)
            return
        try:
            limit = int(query["limit"]) if query.get("limit") else None
        except ValueError:
            raise ApiError(400, "BadRequest", "limit must be an integer") from None
        self._send_json(
            200, cluster.list_document(resource, namespace, selector, limit, query.get("continue"))
        )

    def _item(self, method: str, resource: str, namespace: str, name: str, body: bytes) -> None:
        cluster = self.server.cluster
        if method == "GET":
            self._send_json(200, cluster.get(resource, namespace, name))
            return
        self._only(method, *(("PATCH", "PUT", "DELETE") if resource == "deployments" else ()))
        if method == "PATCH":
            content_type = self.headers.get("Content-Type", "")
            patched = cluster.patch_deployment(namespace, name, content_type, self._json_body(body))
            self._send_json(200, patched)
        elif method == "PUT":
            self._send_json(200, cluster.replace_deployment(namespace, name, self._json_body(body)))
        else:
            self._send_json(200, cluster.delete_deployment(namespace, name))

    def _watch(
        self, resource: str, namespace: str | None, selector: Selector, query: dict[str, str]
    ) -> None:
        cluster = self.server.cluster
        try:
            timeout = float(query.get("timeoutSeconds") or 0) or cluster.watch_timeout_seconds
        except ValueError:
            raise ApiError(400, "BadRequest", "timeoutSeconds must be a number") from None
        deadline = time.monotonic() + timeout
        watch = cluster.open_watch(resource, namespace, selector, query.get("resourceVersion"))
        chunked = self.request_version != "HTTP/1.0"
        if not chunked:
            self.close_connection = True
        framing = "Transfer-Encoding: chunked" if chunked else "Connection: close"
        try:
            head = self._head(200, ["Content-Type: application/json", framing])
            self._streaming = True
            # The head goes out together with the events the watch starts with, if any.
            self.wfile.write(head + _frame(cluster.next_watch_lines(watch, 0) or [], chunked))
            while (remaining := deadline - time.monotonic()) > 0:
                lines = cluster.next_watch_lines(watch, min(remaining, PEER_CHECK_SECONDS))
                if lines is None:
                    break
                if lines:
                    self.wfile.write(_frame(lines, chunked))
                elif self._peer_gone():
                    self.close_connection = True
                    return
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
        finally:
            cluster.close_watch(watch)
            self._streaming = False
            self.log_request(200)

    def _peer_gone(self) -> bool:
        """Whether the client closed the connection (a readable socket with nothing to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
