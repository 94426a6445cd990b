"""This app's own PostgreSQL and Redis stay refused, whatever their configured host looks like.

The guard's decisions are tested directly (no connection is opened); the run-time test at the
end goes through a SpyBackend, which records every connect the guard lets through.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest

from monitoring import services
from monitoring.lib.ssrf import AddressPolicy
from monitoring.lib.testing import SpyBackend

from .support import allow, run

POSTGRES = "django.db.backends.postgresql"
# Every way a URL can name a loopback address; each reaches this host's listeners.
LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "127.0.0.2",
    "127.1",
    "0x7f000001",
    "2130706433",
    "0177.0.0.1",
    "::1",
    "0:0:0:0:0:0:0:1",
    "::ffff:127.0.0.1",
    "::ffff:7f00:2",
]
# Allow-lists an admin might write to reach services under test on this host.
LOOPBACK_ALLOW_LISTS = [["127.0.0.1"], ["::1"], ["127.0.0.0/8", "::1"], ["localhost"]]


def no_dns(host: str, port: int) -> list[str]:
    # Only "localhost" is known; any other name fails like an unknown one, without a query.
    if host == "localhost":
        return ["127.0.0.1", "::1"]
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def policy(allow_list: list[str], databases: dict, redis_urls: list[str]) -> AddressPolicy:
    return AddressPolicy(
        allow=allow_list,
        extra_denied=services.internal_endpoints(databases, redis_urls),
        resolver=no_dns,
    )


def postgres(host: object, port: object = "") -> dict:
    return {"default": {"ENGINE": POSTGRES, "NAME": "rc", "HOST": host, "PORT": port}}


@pytest.mark.parametrize(
    "host",
    ["", None, "/run/postgresql", "/var/run/postgresql/", "localhost", "127.0.0.1", "::1", "[::1]"],
)
@pytest.mark.parametrize("allow_list", LOOPBACK_ALLOW_LISTS)
def test_database_port_is_refused_on_every_loopback_address(host, allow_list) -> None:
    guard = policy(allow_list, postgres(host), [])
    for spelling in LOOPBACK_SPELLINGS:
        decision = guard.check_address(spelling, 5432)
        assert (decision.allowed, decision.rule) == (False, "internal-service"), spelling
    assert guard.check_url("http://localhost:5432/").rule == "internal-service"
    # What the allow-list opened is still open on other ports: the deny is for the store only.
    opened = {"::1": "[::1]", "localhost": "localhost"}.get(allow_list[0], "127.0.0.1")
    assert guard.check_url(f"http://{opened}:8000/").allowed


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5432/",
        "http://[::1]:5432/",
        "http://localhost:5432/",
        "http://0x7f000001:5432/",
        "http://2130706433:5432/",
        "http://[::ffff:127.0.0.1]:5432/",
        "http://127.0.0.9:6379/",
        "http://[::1]:6379/",
    ],
)
def test_check_urls_naming_the_stores_are_refused(url) -> None:
    # The database on a unix socket and Redis on localhost: the audit's two holes.
    guard = policy(["127.0.0.0/8", "::1"], postgres(""), ["redis://localhost:6379/0"])
    decision = guard.check_url(url)
    assert (decision.allowed, decision.rule) == (False, "internal-service"), url


def test_an_explicit_port_is_the_one_refused() -> None:
    guard = policy(["127.0.0.0/8", "::1"], postgres("localhost", 6543), [])
    assert guard.check_address("::1", 6543).rule == "internal-service"
    assert guard.check_address("127.0.0.3", 6543).rule == "internal-service"
    assert guard.check_address("127.0.0.1", 5432).allowed


def test_pgport_counts_when_the_port_is_empty(monkeypatch) -> None:
    monkeypatch.setenv("PGPORT", "5433")
    guard = policy(["127.0.0.1", "::1"], postgres(""), [])
    assert guard.check_address("::1", 5433).rule == "internal-service"
    assert guard.check_address("127.0.0.1", 5432).rule == "internal-service"


def test_several_hosts_and_ports_are_each_refused() -> None:
    databases = postgres("10.5.0.7,10.5.0.8", "5432,5433")
    guard = policy(["10.0.0.0/8"], databases, [])
    for address in ("10.5.0.7", "10.5.0.8"):
        for port in (5432, 5433):
            assert guard.check_address(address, port).rule == "internal-service"
    assert guard.check_address("10.5.0.7", 80).allowed


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6380/6",
        "redis://localhost:6380",
        "redis://[::1]:6380/0",
        "rediss://:secret@127.0.0.1:6380/1",
        "unix:///run/redis/redis.sock",
    ],
)
def test_redis_port_is_refused_on_every_loopback_address(url) -> None:
    port = 6379 if url.startswith("unix") else 6380
    guard = policy(["127.0.0.0/8", "::1"], {}, [url])
    for spelling in LOOPBACK_SPELLINGS:
        assert guard.check_address(spelling, port).rule == "internal-service", spelling


def test_remote_stores_are_refused_by_name_and_address() -> None:
    def compose(host: str, port: int) -> list[str]:
        return {"db": ["10.5.0.7"], "redis": ["10.5.0.8"]}[host]

    guard = AddressPolicy(
        allow=["10.0.0.0/8"],
        extra_denied=services.internal_endpoints(postgres("db"), ["redis://redis:6379/0"]),
        resolver=compose,
    )
    assert guard.check_address("10.5.0.7", 5432).rule == "internal-service"
    assert guard.check_address("10.5.0.8", 6379).rule == "internal-service"
    assert guard.check_url("http://db:5432/").rule == "internal-service"
    assert guard.check_address("10.5.0.7", 8080).allowed


def test_sqlite_alone_denies_nothing_and_odd_hosts_do_not_break_the_policy() -> None:
    sqlite = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/x.sqlite3"}}
    assert services.internal_endpoints(sqlite, []) == []
    # A host the policy cannot parse still leaves the loopback entries in place.
    guard = policy(["127.0.0.1"], postgres("not a host!"), [])
    assert guard.check_address("127.0.0.1", 5432).rule == "internal-service"


def test_the_policies_checks_run_under_refuse_this_apps_stores() -> None:
    from django.conf import settings

    db_port = int(settings.DATABASES["default"].get("PORT") or 5432)
    redis_port = urlsplit(settings.REDIS_URL).port or 6379
    for allow_list in (["127.0.0.1"], ["::1"], ["127.0.0.0/8"]):
        guard = services.make_policy(allow_list)
        for spelling in LOOPBACK_SPELLINGS:
            for port in (db_port, redis_port):
                decision = guard.check_address(spelling, port)
                assert decision.rule == "internal-service", (allow_list, spelling, port)


@pytest.mark.parametrize(
    ("allow_list", "host"),
    [("::1", "[::1]"), ("127.0.0.0/8", "127.0.0.2"), ("127.0.0.1", "0x7f000001")],
)
def test_a_check_at_the_database_is_refused_before_connecting(personas, allow_list, host):
    from django.conf import settings

    from monitoring.models import Check

    allow(personas.staging, allow_list)
    port = int(settings.DATABASES["default"].get("PORT") or 5432)
    # Written directly: creating it through the service is refused up front (same guard).
    check = Check.objects.create(
        project=personas.project,
        environment=personas.staging,
        name="database",
        url=f"http://{host}:{port}/",
    )
    spy = SpyBackend()
    outcome = run(check, inner_backend=spy)
    assert outcome.passed is False
    assert outcome.failures[0]["rule"] == "internal-service"
    assert spy.attempts == []
