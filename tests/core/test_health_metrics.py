"""/health and /metrics."""

import subprocess

import pytest
from django.test import override_settings

from tests.conftest import free_port, stop_process, wait_for_port


def test_health_ok_with_postgres_and_redis(client, db):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body == {"status": "ok", "database": "ok", "redis": "ok", "storage": "ok", "workers": 0}


@override_settings(REDIS_URL="")
def test_health_says_redis_absent_when_not_configured(client, db):
    assert client.get("/health").json()["redis"] == "absent"


@pytest.fixture
def throwaway_redis():
    """A Redis of our own on another port, so the outage never touches the shared one."""
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port, proc=proc)
    yield port, proc
    stop_process(proc)


def test_health_is_503_when_redis_configured_but_down(client, db, throwaway_redis):
    port, proc = throwaway_redis
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{port}/0"):
        assert client.get("/health").status_code == 200
        stop_process(proc)
        response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["failing"] == ["redis"]
    assert body["database"] == "ok"


def test_health_counts_live_workers(client, db):
    from datetime import timedelta

    from django.utils import timezone

    from releasecenter.models import WorkerHeartbeat

    WorkerHeartbeat.objects.create(hostname="w1", last_seen=timezone.now())
    WorkerHeartbeat.objects.create(hostname="w2", last_seen=timezone.now() - timedelta(minutes=5))
    assert client.get("/health").json()["workers"] == 1


def test_metrics_count_requests_by_view(client, personas):
    client.force_login(personas.member)
    client.get(f"/p/{personas.project.slug}/")
    text = client.get("/metrics").content.decode()
    assert (
        'releasecenter_http_requests_total{method="GET",status="200",view="project-overview"}'
        in text
    )
    assert "releasecenter_http_request_duration_seconds_bucket" in text
