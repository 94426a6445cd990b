"""Real processes for the scale-out benchmarks and drills (bench/bench_streams.py,
bench/bench_queues.py, drills/): uvicorn web processes, Celery workers per queue, a throwaway
redis-server, a simulated cluster, a project with people in it, SSE clients. Every target is on
127.0.0.1. Its run_prefix() sets Django up; import the rest after it.

Every run uses queues and event channels of its own (a prefix with the run's pid), so workers and
streams of anything else on the same Redis never take part.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[1]


def run_prefix(kind: str) -> str:
    """Set this run's queue and channel prefixes, then set Django up on a database of this
    script's own (DATABASE_URL, by default rc_<kind>, made and migrated when missing)."""
    from bench import benchdb

    prefix = f"{kind}-{os.getpid()}-"
    os.environ["CELERY_QUEUE_PREFIX"] = prefix
    os.environ["EVENTS_CHANNEL_PREFIX"] = f"{prefix}events:"
    benchdb.setup_django(f"postgres://postgres@127.0.0.1:5432/rc_{kind.replace('-', '_')}")
    return prefix


def raise_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 65536)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(round(fraction * len(ordered))) - 1))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    db = settings.DATABASES["default"]
    env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env["DJANGO_SETTINGS_MODULE"] = "releasecenter.settings_test"
    env.update(extra)
    return env


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Stack:
    """The processes a run started; stop() ends them all (and only them)."""

    procs: list[subprocess.Popen] = field(default_factory=list)
    quiet: bool = True

    def _start(self, argv: list[str], **env: str) -> subprocess.Popen:
        out = subprocess.DEVNULL if self.quiet else None
        proc = subprocess.Popen(argv, cwd=ROOT, env=child_env(**env), stdout=out, stderr=out)
        self.procs.append(proc)
        return proc

    def web(self, port: int | None = None, **env: str) -> tuple[str, subprocess.Popen]:
        port = port or free_port()
        proc = self._start(
            [sys.executable, "-m", "uvicorn", "releasecenter.asgi:application"]
            + ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
            + ["--lifespan", "off", "--backlog", "4096"],
            **env,
        )
        wait_for_port(port, proc)
        return f"http://127.0.0.1:{port}", proc

    def worker(
        self, name: str, queues: tuple[str, ...], concurrency: int = 1, **env: str
    ) -> subprocess.Popen:
        from releasecenter.queues import queue_name

        pool = ["--pool=solo"] if concurrency == 1 else [f"--concurrency={concurrency}"]
        return self._start(
            [sys.executable, "-m", "celery", "-A", "releasecenter", "worker", *pool]
            + ["--without-gossip", "--without-mingle", "--loglevel=WARNING"]
            + ["-Q", ",".join(queue_name(q) for q in queues)]
            + ["-n", f"{name}-{os.getpid()}@%h"],
            **env,
        )

    def redis_server(self, port: int, data_dir: str) -> subprocess.Popen:
        """A throwaway redis-server on its own port, never the machine's own; its append-only
        file in data_dir keeps queued jobs across a restart, as compose's Redis does."""
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "yes", "--dir", data_dir],
            stdout=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        wait_for_port(port, proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)


@dataclass
class People:
    project: object
    environment: object
    admin: object
    engineer: object


def make_project(tag: str, services: int = 2) -> People:
    """A project of its own (a unique slug), an admin and an engineer, a staging environment."""
    from django.contrib.auth import get_user_model

    from releasecenter import services as core
    from releasecenter.models import Membership

    suffix = uuid.uuid4().hex[:8]
    User = get_user_model()  # noqa: N806
    admin = User.objects.create_user(f"{tag}-admin-{suffix}", password=uuid.uuid4().hex)
    engineer = User.objects.create_user(f"{tag}-eng-{suffix}", password=uuid.uuid4().hex)
    project = core.create_project(admin, slug=f"{tag}-{suffix}", name=f"{tag} {suffix}")
    admin_m = Membership.objects.get(user=admin, project=project)
    core.add_member(admin, admin_m, username=engineer.username, role="lead")
    environment = core.create_environment(admin, admin_m, name="staging", kind="staging")
    for i in range(services):
        core.create_service(admin, admin_m, name=f"svc{i}", tier=1 + i % 2)
    return People(project, environment, admin, engineer)


def session_cookie(user) -> str:  # noqa: ANN001
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


class SSEClient:
    """One event stream over a raw asyncio connection (light enough for a thousand in one
    process). Notes when each event arrives; reconnects with Last-Event-ID when told to."""

    def __init__(self, host_port: tuple[str, int], cookie: str, topic: str, last_id: int) -> None:
        self.address = host_port
        self.cookie = cookie
        self.topic = topic
        self.last_id = last_id
        self.opened = asyncio.Event()
        self.arrivals: dict[str, float] = {}  # verb -> monotonic arrival
        self.verbs: list[str] = []
        # (stream position, seconds from the event's row being written to its arrival here)
        self.received: list[tuple[int, float]] = []
        self.reconnects = 0
        self.failed_connects = 0
        self._buffer = b""
        self._writer: asyncio.StreamWriter | None = None

    async def run(self, fallback: Callable[[], tuple[str, int]] | None = None) -> None:
        """Follow the stream; when it ends, reconnect (to fallback() if given) from last id."""
        while True:
            try:
                await self._follow()
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                pass
            if fallback is None:
                return
            self.address = fallback()
            self.reconnects += 1
            await asyncio.sleep(0.2)

    async def _follow(self) -> None:
        try:
            reader, writer = await asyncio.open_connection(*self.address)
        except OSError:
            self.failed_connects += 1
            raise
        self._writer = writer
        writer.write(
            (
                f"GET /events/stream?topic={self.topic} HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nCookie: {self.cookie}\r\n"
                f"Last-Event-ID: {self.last_id}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        self._buffer = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                self._buffer += chunk
                self._parse()
        finally:
            writer.close()

    def _parse(self) -> None:
        # Chunked transfer encoding wraps the frames; the lines we want are whole inside it.
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            line = line.rstrip(b"\r")
            if line.startswith(b"retry:"):
                self.opened.set()
            elif line.startswith(b"id: "):
                self.last_id = int(line[4:])
            elif line.startswith(b"data: "):
                event = json.loads(line[6:])
                self.verbs.append(event["verb"])
                written = datetime.fromisoformat(event["at"]).timestamp()
                self.received.append((event["position"], time.time() - written))
                self.arrivals.setdefault(event["verb"], time.monotonic())

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


# --- Deployments to a simulated cluster -------------------------------------------------------

IMAGE = "registry.example/{name}:{version}"


def add_environment(people: People, name: str) -> object:
    from releasecenter import services as core
    from releasecenter.models import Membership

    admin_m = Membership.objects.get(user=people.admin, project=people.project)
    return core.create_environment(people.admin, admin_m, name=name, kind="staging")


def point_at_cluster(people: People, environment, sim, namespace: str, **fields) -> None:  # noqa: ANN001, ANN003
    """Seed the cluster with the project's services at 1.0.0; deploy the environment there."""
    from deployments import services
    from releasecenter.models import Membership

    for service in people.project.services.all():
        sim.add_deployment(
            namespace, service.name, IMAGE.format(name=service.name, version="1.0.0"), 2
        )
    admin_m = Membership.objects.get(user=people.admin, project=people.project)
    services.save_deploy_target(
        people.admin,
        admin_m,
        environment,
        **{
            "strategy": "kubernetes",
            "api_url": sim.url,
            "bearer_token": "bench-token",
            "namespace": namespace,
            "health_url_template": sim.url + "/_services/{namespace}/{deployment}",
            "verify_allow_list": f"127.0.0.1:{sim.port}",
            "verify_timeout_seconds": 5,
            "rollout_timeout_seconds": 300,
            **fields,
        },
    )


def approved_release(people: People, version: str) -> object:
    from deployments import services
    from releasecenter.models import Membership

    m = Membership.objects.get(user=people.engineer, project=people.project)
    release = services.create_release(people.engineer, m, version=version, commit_sha="abcdef1234")
    services.submit_for_review(people.engineer, m, release)
    return release


def deploy(people: People, release, environment) -> object:  # noqa: ANN001
    from deployments import services
    from releasecenter.models import Membership

    m = Membership.objects.get(user=people.engineer, project=people.project)
    deployment, _created = services.start_deployment(people.engineer, m, release, environment)
    return deployment
