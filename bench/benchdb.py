"""Databases and Django for the benchmarks: each script works in a PostgreSQL database of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]


def ensure_database(url: str) -> None:
    """Create the database of `url` if it does not exist (its data is kept between runs)."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(default_url: str) -> str:
    """Django on DATABASE_URL (default `default_url`), migrated; returns the database's name."""
    os.environ.setdefault("DATABASE_URL", default_url)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "releasecenter.settings_test")
    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    return urlsplit(os.environ["DATABASE_URL"]).path.lstrip("/")


def recreate_database(url: str) -> None:
    """Drop and create the database of `url` (loopback only): a run starts from nothing."""
    import psycopg

    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"The benchmarks only talk to 127.0.0.1, not {parts.hostname}.")
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_web(workers: int = 1) -> tuple[subprocess.Popen, str]:
    """uvicorn serving the app (or BENCH_ASGI_APP) on a free loopback port, with `workers`
    processes; returns the process and its base URL once it listens."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn"]
    command += [os.environ.get("BENCH_ASGI_APP", "releasecenter.asgi:application")]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    command += ["--log-level", "warning", "--no-access-log", "--lifespan", "off"]
    proc = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("uvicorn exited before it listened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("uvicorn did not listen within 30 s")


def session_cookie(user) -> str:  # noqa: ANN001
    """A logged-in session for `user`, as the value of the session cookie."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value
