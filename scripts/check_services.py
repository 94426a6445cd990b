"""Stop the test run at once, naming the service, when PostgreSQL or Redis does not answer."""

import os
import sys
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis

database_url = os.environ["DATABASE_URL"]
redis_url = os.environ["REDIS_URL"]


def shown(url: str) -> str:
    """The URL without its password: this line ends up in CI logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


try:
    # Connect to the maintenance database: the suite creates its own test database.
    conninfo = psycopg.conninfo.conninfo_to_dict(
        database_url.replace("postgres://", "postgresql://", 1)
    )
    conninfo["dbname"] = "postgres"
    with psycopg.connect(**conninfo, connect_timeout=3) as conn:
        conn.execute("SELECT 1")
except Exception as exc:  # noqa: BLE001
    sys.exit(f"PostgreSQL is not reachable at {shown(database_url)}: {exc}")

try:
    redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3).ping()
except Exception as exc:  # noqa: BLE001
    sys.exit(f"Redis is not reachable at {shown(redis_url)}: {exc}")

print(f"PostgreSQL at {shown(database_url)} and Redis at {shown(redis_url)} answer.")
