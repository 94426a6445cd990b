"""Prometheus metrics at /metrics: what the web processes counted, summed over all of them, and the
state operators alert on, read from the database and the broker when Prometheus asks.

**Across processes.** A web server runs several uvicorn processes (WEB_CONCURRENCY); a scrape
reaches one of them, which alone would report its own share of the requests. So the web launcher
(``python -m releasecenter.serve``, what the Procfile, the image and the manifests start) empties a
directory and names it in PROMETHEUS_MULTIPROC_DIR before uvicorn starts; every process then keeps
its counters in a file there (prometheus_client's multiprocess mode), and the process that answers
a scrape sums the files of all of them. Without that variable (tests, `manage.py runserver`) the
counters live in this process.

**Domain gauges.** Counts of deployments by status, checks by state, queue lengths and so on are
the same whichever process answers, so they are read at scrape time, not kept in any process. An
app adds its own in its AppConfig.ready(), without the core importing it:

    metrics.register_gauge(
        "releasecenter_incidents_open", "Open incidents by severity.", ["severity"], sample
    )

where ``sample()`` returns ``{(label values...): value}``. A gauge whose sample fails (the
database is down) is left out of that scrape and logged; the rest still answer.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis
from django.conf import settings
from django.http import HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from .middleware import _BothModes

logger = logging.getLogger(__name__)

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
# Summed over the live web processes; a dead process's streams are gone with it.
EVENT_STREAMS = Gauge(
    "releasecenter_event_streams_open",
    "Server-sent event streams open on the web processes.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)


# --- Gauges read at scrape time ---------------------------------------------------------------

Sample = Callable[[], dict[tuple[str, ...], float]]


@dataclass(frozen=True)
class DomainGauge:
    name: str
    documentation: str
    labels: tuple[str, ...]
    sample: Sample


_gauges: dict[str, DomainGauge] = {}


def register_gauge(name: str, documentation: str, labels: Iterable[str], sample: Sample) -> None:
    """Add a gauge computed when /metrics is scraped (see the module docstring)."""
    _gauges[name] = DomainGauge(name, documentation, tuple(labels), sample)


class _DomainCollector:
    def collect(self) -> Iterable[GaugeMetricFamily]:
        for gauge in list(_gauges.values()):
            try:
                values = gauge.sample()
            except Exception:  # noqa: BLE001 - one failing source must not blank the scrape
                logger.warning("metrics: gauge %s could not be read", gauge.name, exc_info=True)
                continue
            family = GaugeMetricFamily(gauge.name, gauge.documentation, labels=gauge.labels)
            for label_values, value in sorted(values.items()):
                family.add_metric(list(label_values), value)
            yield family


DOMAIN_REGISTRY = CollectorRegistry(auto_describe=False)
DOMAIN_REGISTRY.register(_DomainCollector())


# The queues' own gauges: Redis is the broker, and the core owns the queues.
SENT_AT_HEADER = "rc_sent_at"


def _broker() -> redis.Redis | None:
    if not settings.REDIS_URL:
        return None
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def _queue_lengths() -> dict[tuple[str, ...], float]:
    from .queues import QUEUES, queue_name

    client = _broker()
    if client is None:
        return {}
    try:
        with client.pipeline(transaction=False) as pipe:
            for kind in QUEUES:
                pipe.llen(queue_name(kind))
            return {(kind,): float(n) for kind, n in zip(QUEUES, pipe.execute(), strict=True)}
    finally:
        client.close()


def _oldest_job_age() -> dict[tuple[str, ...], float]:
    """Seconds the oldest waiting message of each queue has waited (0 when the queue is empty).

    Workers take from the right end of the Redis list (kombu's BRPOP), so the oldest is there;
    its publish time is the header releasecenter.celery stamps on every message."""
    from .queues import QUEUES, queue_name

    client = _broker()
    if client is None:
        return {}
    ages = {}
    try:
        now = time.time()
        for kind in QUEUES:
            raw = client.lindex(queue_name(kind), -1)
            age = 0.0
            if raw is not None:
                sent = json.loads(raw).get("headers", {}).get(SENT_AT_HEADER)
                age = max(0.0, now - float(sent)) if sent is not None else 0.0
            ages[(kind,)] = age
    finally:
        client.close()
    return ages


register_gauge(
    "releasecenter_queue_length", "Jobs waiting in each Celery queue.", ["queue"], _queue_lengths
)
register_gauge(
    "releasecenter_queue_oldest_job_age_seconds",
    "How long the oldest job waiting in each Celery queue has waited.",
    ["queue"],
    _oldest_job_age,
)


# --- Requests ---------------------------------------------------------------------------------


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


# --- The scrape -------------------------------------------------------------------------------

_LIVE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db$")


def _forget_dead_processes(directory: str) -> None:
    """Drop the live gauges of web processes that died (uvicorn replaces a worker that dies;
    its counters stay, since what it counted happened, but its open streams are gone)."""
    for path in glob.glob(os.path.join(directory, "gauge_live*.db")):
        match = _LIVE_FILE.search(os.path.basename(path))
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)
        except PermissionError:
            pass  # alive, someone else's


def exposition() -> bytes:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        _forget_dead_processes(directory)
        processes = CollectorRegistry()
        multiprocess.MultiProcessCollector(processes, directory)
    else:
        processes = REGISTRY
    return generate_latest(processes) + generate_latest(DOMAIN_REGISTRY)


def metrics_view(request):  # noqa: ANN001, ANN201
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
