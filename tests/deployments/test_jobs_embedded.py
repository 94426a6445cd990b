"""The demo on the embedded defaults, as a newcomer without PostgreSQL or Redis runs it: a SQLite
file and kombu's filesystem broker. Migrate, seed the demo, start the simulated cluster and a
worker, deploy release 1.4.0 to staging; it succeeds. This is the one test that runs the
runner's non-PostgreSQL branches (step updates, log lines, what runs where)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from tests.conftest import ROOT, WORKER_COMMAND, free_port, stop_process, wait_for_port

DEPLOY = """
from deployments.decision import decide
from deployments.models import Release
from deployments.services import jobs
from django.contrib.auth import get_user_model
from releasecenter.models import Membership, Project

project = Project.objects.get(slug="acme-shop")
lead = get_user_model().objects.get(username="lead")
membership = Membership.objects.get(user=lead, project=project)
release = Release.objects.get(project=project, version="1.4.0")
staging = project.environments.get(name="staging")
go = decide(release, staging, requester=lead).go
deployment, created = jobs.start_deployment(
    lead, membership, release, staging,
    override_reason="" if go else "embedded-defaults test: deploying past the demo's gates",
)
print(deployment.pk)
"""


def embedded_env(folder: Path, sim_port: int) -> dict[str, str]:
    """The environment of a machine with nothing configured but a key: no DATABASE_URL (it
    points at the SQLite file the default would use), no REDIS_URL, no storage account."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "REDIS_", "AZURE_", "CELERY_", "DJANGO_"))
        and key not in ("RELEASECENTER_VAR_DIR", "MEDIA_ROOT", "DEPLOYMENT_HEARTBEAT_TTL_SECONDS")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="releasecenter.settings",
        DATABASE_URL=f"sqlite:///{folder / 'releasecenter.sqlite3'}",
        RELEASECENTER_VAR_DIR=str(folder),
        SECRET_KEY="embedded-defaults-test-" + "k" * 40,
        SECURE_SSL_REDIRECT="0",
        LOG_JSON="0",
        SIMCLUSTER_URL=f"http://127.0.0.1:{sim_port}",
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_demo_deploys_on_sqlite_and_the_filesystem_broker(tmp_path):
    port = free_port()
    env = embedded_env(tmp_path, port)
    manage(env, "migrate", "--noinput")
    manage(env, "seed_demo", "--quiet-logins")
    database = tmp_path / "releasecenter.sqlite3"
    assert database.exists()
    with closing(sqlite3.connect(database)) as db:
        # The demo's checks and smoke suite follow SIMCLUSTER_URL, like its deploy targets.
        urls = [row[0] for row in db.execute("SELECT url FROM monitoring_check WHERE url != ''")]
    # (The TCP check probes the cluster's port itself: tcp://127.0.0.1:<port>.)
    following = (f"http://127.0.0.1:{port}/", f"tcp://127.0.0.1:{port}")
    assert urls and all(u.startswith(following) for u in urls), urls
    sim = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "simcluster",
            "--port",
            str(port),
            "--seed-project",
            "acme-shop",
            "--rollout-seconds",
            "0.2",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [*WORKER_COMMAND, "--without-heartbeat"],
        cwd=ROOT,
        env=env,
    )
    try:
        wait_for_port(port, proc=sim)
        deployment_id = int(manage(env, "shell", "-c", DEPLOY).split()[-1])
        deadline = time.monotonic() + 60
        status = reason = ""
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=20)) as db:
            while time.monotonic() < deadline:
                status, reason = db.execute(
                    "SELECT status, reason FROM deployments_deployment WHERE id = ?",
                    (deployment_id,),
                ).fetchone()
                if status not in ("queued", "running"):
                    break
                assert worker.poll() is None, "the worker exited"
                time.sleep(0.2)
            steps = db.execute(
                "SELECT service_name, kind, status FROM deployments_deploymentstep "
                "WHERE deployment_id = ?",
                (deployment_id,),
            ).fetchall()
            log = db.execute(
                "SELECT seq, text FROM deployments_deploymentlogline WHERE deployment_id = ? "
                "ORDER BY seq",
                (deployment_id,),
            ).fetchall()
            running = dict(
                db.execute(
                    "SELECT s.name, v.version FROM deployments_deployedversion v "
                    "JOIN releasecenter_service s ON s.id = v.service_id "
                    "JOIN releasecenter_environment e ON e.id = v.environment_id "
                    "WHERE e.name = 'staging' AND v.deployment_id = ?",
                    (deployment_id,),
                ).fetchall()
            )
    finally:
        stop_process(worker)
        stop_process(sim)
    lines = [text for _, text in log]
    assert status == "succeeded", (reason, steps, lines[-5:])
    # Every step was written through the per-row UPDATE branch, every line through bulk_create,
    # none lost or repeated.
    assert steps and {s for _, _, s in steps} == {"succeeded"}
    assert [seq for seq, _ in log] == list(range(1, len(log) + 1))
    assert any("1.4.0 deployed and verified" in line for line in lines), lines[-5:]
    # The demo's smoke suite ran as part of verification, its result stored in SQLite too.
    assert any(line.startswith("smoke suite '") and "' passed: " in line for line in lines)
    services = {name for name, _, _ in steps}
    assert len(services) == 8 and running == dict.fromkeys(services, "1.4.0")
