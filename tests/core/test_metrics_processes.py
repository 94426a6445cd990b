"""/metrics across web processes: `WEB_CONCURRENCY=2 honcho start web` (the Procfile's web line)
runs two uvicorn processes, and N requests to /health show as N in
releasecenter_http_requests_total whichever process answers the scrape. The exposition passes
`promtool check metrics`, and carries the domain gauges."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, _child_env, free_port, stop_process, wait_for_port

REQUESTS = 40


def health_requests(text: str) -> float:
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return sum(
        s.value
        for s in families["releasecenter_http_requests"].samples
        if s.name == "releasecenter_http_requests_total" and s.labels["view"] == "health"
    )


def counted_by_process(directory: Path) -> dict[str, float]:
    """Requests to /health each process counted, from its own file alone."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        alone = directory.parent / f"alone-{path.stem}"
        alone.mkdir()
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, str(alone))
        counts[path.stem] = sum(
            s.value
            for metric in registry.collect()
            for s in metric.samples
            if s.name == "releasecenter_http_requests_total" and s.labels["view"] == "health"
        )
    return counts


@pytest.fixture
def web_processes(transactional_db, tmp_path):  # noqa: ANN001, ANN201
    port = free_port()
    directory = tmp_path / "metrics"
    directory.mkdir()
    # A file left by an earlier run: the launcher must start from an empty directory.
    (directory / "counter_999999.db").write_bytes(b"stale bytes of an earlier run")
    proc = subprocess.Popen(
        [sys.executable, "-m", "honcho", "start", "-f", str(ROOT / "Procfile"), "web"],
        cwd=ROOT,
        # As an operator runs it: the virtual environment's bin first on PATH (the Procfile
        # names its commands as found there).
        env=_child_env(
            WEB_CONCURRENCY="2",
            PORT=str(port),
            PROMETHEUS_MULTIPROC_DIR=str(directory),
            PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        ),
        start_new_session=True,
    )
    try:
        wait_for_port(port, timeout=60, proc=proc)
        yield f"http://127.0.0.1:{port}", directory
    finally:
        stop_process(proc, signal.SIGINT, timeout=20)


def test_requests_are_summed_over_two_uvicorn_processes(web_processes):
    url, directory = web_processes

    def one(_i: int) -> int:
        # A new connection each time, so the two processes share the requests.
        return httpx.get(f"{url}/health", timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(REQUESTS)))
    assert len(statuses) == REQUESTS

    per_process = counted_by_process(directory)
    assert len([n for n in per_process.values() if n]) == 2, per_process
    assert sum(per_process.values()) == REQUESTS

    # Whichever process answers, the scrape reports all of them.
    for _ in range(4):
        text = httpx.get(f"{url}/metrics", timeout=10).text
        assert health_requests(text) == REQUESTS


def test_exposition_passes_promtool_and_has_the_domain_gauges(web_processes, personas):
    url, _directory = web_processes
    httpx.get(f"{url}/health", timeout=10)
    text = httpx.get(f"{url}/metrics", timeout=10).text
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: ./scripts/test installs Debian's prometheus package"
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "releasecenter_deployments",
        "releasecenter_deployment_oldest_queued_seconds",
        "releasecenter_checks",
        "releasecenter_queue_length",
        "releasecenter_queue_oldest_job_age_seconds",
        "releasecenter_event_streams_open",
    ):
        assert name in families, name
    queues = {s.labels["queue"] for s in families["releasecenter_queue_length"].samples}
    assert queues == {"deployments", "checks", "notifications", "default"}
    statuses = {s.labels["status"]: s.value for s in families["releasecenter_deployments"].samples}
    assert statuses["running"] == 0 and "rolled_back" in statuses


def test_queue_gauges_report_a_waiting_job_and_its_age(client, db):  # noqa: ANN001
    import redis
    from django.conf import settings

    from releasecenter.queues import all_queue_names
    from releasecenter.tasks import prune_worker_heartbeats

    broker = redis.Redis.from_url(settings.REDIS_URL)
    broker.delete(*all_queue_names())
    try:
        prune_worker_heartbeats.delay()  # no worker takes it in this test
        time.sleep(1.2)
        families = {
            f.name: f
            for f in text_string_to_metric_families(client.get("/metrics").content.decode())
        }
        length = {
            s.labels["queue"]: s.value for s in families["releasecenter_queue_length"].samples
        }
        age = {
            s.labels["queue"]: s.value
            for s in families["releasecenter_queue_oldest_job_age_seconds"].samples
        }
        assert length == {"default": 1, "checks": 0, "deployments": 0, "notifications": 0}
        assert 1.2 <= age["default"] < 30
        assert age["checks"] == 0
    finally:
        broker.delete(*all_queue_names())
