"""Prometheus metrics: request counts and latencies by view, on a registry of our own.

Other apps add domain metrics to REGISTRY (deployments, checks). One web process keeps its own
counters; behind several replicas Prometheus scrapes each and sums.
"""

import time

from django.http import HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from .middleware import _BothModes

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "releasecenter_http_requests_total",
    "HTTP requests by view, method and status.",
    ["view", "method", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "releasecenter_http_request_duration_seconds",
    "HTTP request latency by view.",
    ["view", "method"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def _view_name(request) -> str:  # noqa: ANN001
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "<unresolved>"
    return match.view_name or match._func_path


def _observe(request, response, started: float) -> None:  # noqa: ANN001
    view = _view_name(request)
    if view != "events-stream":
        # A stream's duration is its connection time, not a latency.
        LATENCY.labels(view, request.method).observe(time.perf_counter() - started)
    REQUESTS.labels(view, request.method, str(response.status_code)).inc()


class MetricsMiddleware(_BothModes):
    def handle(self, request):  # noqa: ANN001, ANN201
        started = time.perf_counter()
        response = self.get_response(request)
        _observe(request, response, started)
        return response

    async def __acall__(self, request):  # noqa: ANN001, ANN204
        started = time.perf_counter()
        response = await self.get_response(request)
        _observe(request, response, started)
        return response


def metrics_view(request):  # noqa: ANN001, ANN201
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
