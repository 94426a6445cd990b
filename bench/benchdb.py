"""Databases and Django for the benchmarks: each script works in a PostgreSQL database of its own."""

from __future__ import annotations

import os
from urllib.parse import urlsplit


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
