"""Shared fixtures: personas, API clients, and the real processes some tests need (an ASGI web
server, a Celery worker, Azurite, a browser). Every network target is on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.conf import settings

# Django-dependent imports stay inside the fixtures, so the pure-library tests (markdown parser,
# simulated cluster, check engine) can also run with `-p no:django`.

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TOOLS_BIN = ROOT / "tools" / "node_modules" / ".bin"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A real Celery worker: one job at a time in its own process, quiet, no cluster chatter.
WORKER_COMMAND = [
    sys.executable,
    "-m",
    "celery",
    "-A",
    "releasecenter",
    "worker",
    "--pool=solo",
    "--concurrency=1",
    "--without-gossip",
    "--without-mingle",
    "--loglevel=WARNING",
]


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- Personas ---------------------------------------------------------------------------------


@dataclass
class Personas:
    project: object
    staging: object
    production: object
    admin: object
    lead: object
    member: object
    viewer: object
    outsider: object
    other_project: object

    def membership(self, user):  # noqa: ANN001, ANN201
        from releasecenter.models import Membership

        return Membership.objects.get(user=user, project=self.project)


@pytest.fixture
def personas(db) -> Personas:  # noqa: ANN001
    from django.contrib.auth import get_user_model

    from releasecenter import services
    from releasecenter.models import Membership, Service

    User = get_user_model()  # noqa: N806
    admin = User.objects.create_user("alice-admin", password="x")
    lead = User.objects.create_user("liam-lead", password="x")
    member = User.objects.create_user("mia-member", password="x")
    viewer = User.objects.create_user("vic-viewer", password="x")
    outsider = User.objects.create_user("oscar-outsider", password="x")
    project = services.create_project(admin, slug="shop", name="Shop")
    admin_m = Membership.objects.get(user=admin, project=project)
    services.add_member(
        admin,
        admin_m,
        username="liam-lead",
        role="lead",
        signoff_capacities=["Technical Lead", "Security Review"],
    )
    services.add_member(
        admin,
        admin_m,
        username="mia-member",
        role="engineer",
        signoff_capacities=["Backend Engineer"],
    )
    services.add_member(admin, admin_m, username="vic-viewer", role="viewer")
    staging = services.create_environment(admin, admin_m, name="staging", kind="staging")
    production = services.create_environment(
        admin, admin_m, name="production", kind="production", protected=True
    )
    services.create_service(admin, admin_m, name="api", tier=1)
    services.create_service(admin, admin_m, name="web", tier=2)
    other = services.create_project(outsider, slug="elsewhere", name="Elsewhere")
    other_m = Membership.objects.get(user=outsider, project=other)
    services.create_environment(outsider, other_m, name="staging", kind="staging")
    Service.objects.create(project=other, name="secret-service", tier=1)
    return Personas(project, staging, production, admin, lead, member, viewer, outsider, other)


@pytest.fixture
def api_client_for():  # noqa: ANN201
    """An API client that authenticates like CI does: with a bearer token of the user."""

    from rest_framework.test import APIClient

    from releasecenter import services

    def make(user) -> APIClient:  # noqa: ANN001
        _token, raw = services.create_api_token(user, "tests")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        return client

    return make


# --- Real processes ---------------------------------------------------------------------------


def _child_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "releasecenter.settings_test"
    db = settings.DATABASES["default"]
    # The children use the test database pytest-django created, not the configured one.
    env["DATABASE_URL"] = (
        f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        if db["ENGINE"].endswith("postgresql")
        else f"sqlite:///{db['NAME']}"
    )
    env.update(overrides)
    return env


@dataclass
class WebServer:
    url: str
    proc: subprocess.Popen

    def client(self, user=None) -> httpx.Client:  # noqa: ANN001
        """An httpx client logged in as user through a real session cookie."""
        cookies = {}
        if user is not None:
            from django.test import Client

            django_client = Client()
            django_client.force_login(user)
            cookies[settings.SESSION_COOKIE_NAME] = django_client.cookies[
                settings.SESSION_COOKIE_NAME
            ].value
        return httpx.Client(base_url=self.url, cookies=cookies, timeout=10)


@pytest.fixture
def start_web(transactional_db) -> Iterator:  # noqa: ANN001
    """Start uvicorn serving the real ASGI app in a child process, on the test database."""
    started: list[subprocess.Popen] = []

    def start(**env_overrides: str) -> WebServer:
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "releasecenter.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--lifespan",
                "off",
            ],
            cwd=ROOT,
            env=_child_env(**env_overrides),
        )
        started.append(proc)
        wait_for_port(port, proc=proc)
        return WebServer(f"http://127.0.0.1:{port}", proc)

    yield start
    for proc in started:
        stop_process(proc)


@pytest.fixture
def web_server(start_web) -> WebServer:  # noqa: ANN001
    return start_web()


@pytest.fixture
def celery_worker(transactional_db) -> Iterator[subprocess.Popen]:  # noqa: ANN001
    """A real Celery worker process on all of this run's queues, against the test database and
    Redis."""
    from releasecenter.queues import all_queue_names

    proc = subprocess.Popen(
        [
            *WORKER_COMMAND,
            "-Q",
            ",".join(all_queue_names()),
            "-n",
            f"test-{os.getpid()}@%h",
        ],
        cwd=ROOT,
        env=_child_env(),
    )
    yield proc
    stop_process(proc)


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """Azurite's blob service on a free port, keeping blobs in memory; yields its connection
    string. (--inMemoryPersistence and --location exclude each other: Azurite exits at once.)"""
    binary = TOOLS_BIN / "azurite-blob"
    if not binary.exists():
        pytest.fail("Azurite is not installed: run ./scripts/test (it runs npm ci in tools/).")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(binary),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ],
        cwd=ROOT / "var",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
            "K1SZFPTOtr/KBHBeksoGMGw==;"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )
    finally:
        stop_process(proc)


@pytest.fixture
def azure_storage(azurite, settings):  # noqa: ANN001, ANN201
    """Route Django's default storage to a container of Azurite for this test: call it with the
    container's name (made private unless create=False) and get its ContainerClient."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    def route(container: str, *, create: bool = True):  # noqa: ANN202
        service = BlobServiceClient.from_connection_string(azurite)
        if create:
            try:
                service.create_container(container)  # private: no public access level
            except ResourceExistsError:
                pass
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {
                "BACKEND": "storages.backends.azure_storage.AzureStorage",
                "OPTIONS": {
                    "connection_string": azurite,
                    "azure_container": container,
                    "expiration_secs": 300,
                    "overwrite_files": False,
                },
            },
        }
        return service.get_container_client(container)

    return route


@pytest.fixture(scope="session")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: ./scripts/test installs it.")
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def login_page(browser, base_url: str, username: str, password: str):  # noqa: ANN001, ANN201
    """A new browser context logged in through the real login form."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{base_url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return page


# --- Deployments: a simulated cluster and workers with settings of their own -------------------


@pytest.fixture
def start_sim() -> Iterator:
    """Start simulated Kubernetes clusters (deployments.sim) in this process, on 127.0.0.1."""
    from deployments.sim import serve

    started = []

    def start(rollout_seconds: float = 0.3, progress_deadline_seconds: int = 2, **kwargs):  # noqa: ANN003, ANN202
        cluster = serve(
            rollout_seconds=rollout_seconds,
            progress_deadline_seconds=progress_deadline_seconds,
            **kwargs,
        )
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


@pytest.fixture
def start_worker(transactional_db) -> Iterator:  # noqa: ANN001
    """Start real Celery workers on this run's queues, each with environment overrides (e.g. a
    short DEPLOYMENT_HEARTBEAT_TTL_SECONDS). Tests may kill them; the rest stop at teardown."""
    started: list[subprocess.Popen] = []

    from releasecenter.queues import all_queue_names, queue_name

    def start(*, queues: tuple[str, ...] = (), **env_overrides: str) -> subprocess.Popen:
        """queues: the kinds this worker takes (releasecenter.queues.QUEUES); all by default."""
        names = [queue_name(kind) for kind in queues] or all_queue_names()
        proc = subprocess.Popen(
            [
                *WORKER_COMMAND,
                "--without-heartbeat",
                "-Q",
                ",".join(names),
                "-n",
                f"test-{os.getpid()}-{len(started)}@%h",
            ],
            cwd=ROOT,
            env=_child_env(**env_overrides),
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop_process(proc)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that use a real browser last.

    Playwright's sync API keeps an asyncio loop running in the main thread for as long as the
    session-scoped ``browser`` fixture lives, and every later ``asyncio.run`` in that thread then
    fails (the check engine's tests use it). pytest-django orders transactional tests (browser
    tests among them) first, so move them to the end of whatever is being run.
    """
    uses_browser = [item for item in items if "browser" in getattr(item, "fixturenames", ())]
    if uses_browser:
        rest = [item for item in items if "browser" not in getattr(item, "fixturenames", ())]
        items[:] = rest + uses_browser
