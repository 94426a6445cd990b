"""Tasks are split over four queues, and every place that runs workers covers all four."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from releasecenter.celery import app
from releasecenter.queues import QUEUES, queue_kind_for, queue_name, route_task
from tests.conftest import ROOT


def test_tasks_route_to_the_queue_of_their_kind():
    app.loader.import_default_modules()
    names = {name for name in app.tasks if not name.startswith("celery.")}
    expected = {
        "deployments.tasks.run_deployment": "deployments",
        "monitoring.tasks.dispatch_due_checks": "checks",
        "monitoring.tasks.run_batch": "checks",
        "monitoring.tasks.run_requested": "checks",
        "checklists.tasks.run_automated_item": "checks",
        "monitoring.tasks.deliver_notification": "notifications",
        # The reaper must run while every deployment worker is busy or dead.
        "deployments.tasks.reap_deployments": "default",
        "monitoring.tasks.prune_results": "default",
        "releasecenter.tasks.announce": "default",
    }
    assert set(expected) <= names
    for name, kind in expected.items():
        assert queue_kind_for(name) == kind, name
    assert {queue_kind_for(name) for name in names} == set(QUEUES)
    # Escalation (a task of the incident work, whatever its exact name) pages people.
    assert queue_kind_for("monitoring.tasks.escalate_incident") == "notifications"


def test_queue_names_carry_the_run_prefix(settings):
    assert settings.CELERY_QUEUE_PREFIX.startswith("test-")
    route = route_task("deployments.tasks.run_deployment", (), {}, {})
    assert route == {"queue": f"{settings.CELERY_QUEUE_PREFIX}deployments"}
    assert settings.CELERY_TASK_DEFAULT_QUEUE == queue_name("default")
    assert queue_name("checks", prefix="") == "checks"
    with pytest.raises(ValueError, match="unknown queue"):
        queue_name("celery")


def test_a_delayed_task_is_published_to_its_queue(settings):
    from deployments.tasks import run_deployment

    # What the producer decides, without a broker: the router's answer merged into the options.
    options = app.amqp.router.route({}, run_deployment.name, (1,), {})
    assert options["queue"].name == f"{settings.CELERY_QUEUE_PREFIX}deployments"
    # An explicit queue still wins (benchmarks hold jobs back that way).
    options = app.amqp.router.route({"queue": "elsewhere"}, run_deployment.name, (1,), {})
    assert options["queue"].name == "elsewhere"


def _queues_of(command: list[str]) -> set[str]:
    return set(command[command.index("-Q") + 1].split(",")) if "-Q" in command else set()


def test_compose_runs_a_worker_for_every_queue():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    covered: dict[str, str] = {}
    for name, service in services.items():
        command = service.get("command") or []
        if command[:4] == ["celery", "-A", "releasecenter", "worker"]:
            queues = _queues_of(command)
            assert queues, f"{name} takes no named queue"
            assert "healthcheck" in service, name
            for queue in queues:
                covered[queue] = name
    assert set(covered) == set(QUEUES)
    # Rollouts and checks never share a worker pool.
    assert covered["deployments"] != covered["checks"]


def test_procfile_runs_a_worker_for_every_queue():
    covered: set[str] = set()
    pools = []
    for line in (ROOT / "Procfile").read_text().splitlines():
        _name, _, command = line.partition(":")
        argv = shlex.split(command)
        if re.search(r"celery$", argv[0]) and "worker" in argv:
            pools.append(_queues_of(argv))
            covered |= pools[-1]
    assert covered == set(QUEUES)
    assert not any({"deployments", "checks"} <= pool for pool in pools)
