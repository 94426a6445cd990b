"""The address policy's decisions, and its enforcement at connect time.

Network rule for this file: the only real connections go to servers the tests start on
127.0.0.1. Non-loopback destinations appear in three ways only:
* pure decisions (no I/O at all);
* requests through a guarded client whose inner backend is a SpyBackend, which records every
  connect the guard lets through and itself refuses anything that is not loopback;
* the `netns_inner` tests, which run in a subprocess inside a fresh network namespace that has
  only `lo`, under an audit hook that aborts any socket connect to a non-loopback address.
Resolvers are always injected, so no test sends a DNS query.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitoring.lib.ssrf import (
    AddressPolicy,
    Decision,
    GuardedClient,
    SSRFBlocked,
    make_client,
    parse_host_literal,
)
from monitoring.lib.testing import LoopbackOnlyAuditHook, SpyBackend, TargetServer

NETNS_ENV = "RC_MONITORING_NETNS_INNER"
INSIDE_NETNS = os.environ.get(NETNS_ENV) == "1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def fake_resolver(table: dict[str, list[str]]):
    """A resolver that knows only `table`; anything else fails like an unknown name."""

    def resolve(host: str, port: int) -> list[str]:
        try:
            return table[host.lower().rstrip(".")]
        except KeyError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None

    return resolve


# --- host literals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "meaning"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("169.254.43518", "169.254.169.254"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("[::ffff:7f00:1]", "127.0.0.1"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("2002:7f00:1::", "127.0.0.1"),
        ("::127.0.0.1", "127.0.0.1"),
        ("2606:4700::1111", "2606:4700::1111"),
    ],
)
def test_parse_host_literal_reads_what_inet_aton_reads(spelling: str, meaning: str) -> None:
    assert parse_host_literal(spelling) == ipaddress.ip_address(meaning)


@pytest.mark.parametrize(
    "name",
    [
        "example.com",
        "1.2.3.4.5",
        "256.0.0.1",
        "1.16777216",
        "4294967296",
        "08.0.0.1",
        "0x1g",
        "1..1",
        "+1",
        "1_000",
        "",
        "1.2.3.4.example.com",
    ],
)
def test_parse_host_literal_leaves_names_alone(name: str) -> None:
    assert parse_host_literal(name) is None


# --- decisions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("169.254.169.254", "link-local"),
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("[::1]", "loopback"),
        ("::1", "loopback"),
        ("0x7f000001", "loopback"),
        ("2130706433", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("127.1", "loopback"),
        ("0177.0.0.1", "loopback"),
        ("fe80::1", "link-local"),
        ("fe80::1%1", "link-local"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("fd00::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("2002:a9fe:a9fe::", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.10", "reserved"),
        ("2001:db8::1", "reserved"),
    ],
)
def test_default_policy_refuses_internal_addresses(address: str, rule: str) -> None:
    decision = AddressPolicy().check_address(address, 80)
    assert decision == Decision(False, rule, decision.message)
    assert "refused" in decision.message


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_default_policy_allows_public_addresses(address: str) -> None:
    decision = AddressPolicy().check_address(address, 443)
    assert (decision.allowed, decision.rule) == (True, "public")


@pytest.mark.parametrize("entry", ["127.0.0.1/32", "127.0.0.1", "127.0.0.0/8", "2130706433"])
def test_allow_list_opens_loopback(entry: str) -> None:
    policy = AddressPolicy(allow=[entry])
    assert policy.check_address("127.0.0.1", 8000).allowed
    assert policy.check_address("127.0.0.1", 8000).rule == "allow-list"
    assert policy.check_address("::ffff:127.0.0.1", 8000).allowed
    assert not policy.check_address("10.0.0.1", 8000).allowed


def test_allow_entry_with_port_opens_that_port_only() -> None:
    policy = AddressPolicy(allow=["127.0.0.1:8000", "[::1]:9000"])
    assert policy.check_address("127.0.0.1", 8000).allowed
    assert policy.check_address("127.0.0.1", 8001).rule == "loopback"
    assert policy.check_address("::1", 9000).allowed
    assert not policy.check_address("::1", 8000).allowed


def test_over_broad_allow_entry_does_not_open_internal_ranges() -> None:
    policy = AddressPolicy(allow=["0.0.0.0/0", "::/0"])
    assert policy.check_address("169.254.169.254", 80).rule == "link-local"
    assert policy.check_address("127.0.0.1", 80).rule == "loopback"
    assert policy.check_address("fe80::1", 80).rule == "link-local"
    narrow = AddressPolicy(allow=["10.0.0.0/8"])
    assert narrow.check_address("10.1.2.3", 80).allowed
    assert narrow.check_address("169.254.169.254", 80).rule == "link-local"


def test_unspecified_and_multicast_cannot_be_allow_listed() -> None:
    policy = AddressPolicy(allow=["0.0.0.0/8", "224.0.0.0/4"])
    assert policy.check_address("0.0.0.0", 80).rule == "unspecified"
    assert policy.check_address("224.0.0.1", 80).rule == "multicast"


def test_closed_network_mode_refuses_public_addresses_not_on_the_list() -> None:
    policy = AddressPolicy(allow=["198.51.0.0/16", "93.184.216.0/24"], allow_public=False)
    assert policy.check_address("93.184.216.34", 443).allowed
    decision = policy.check_address("8.8.8.8", 443)
    assert (decision.allowed, decision.rule) == (False, "not-allowed")


def test_app_database_and_redis_refused_even_when_loopback_is_allowed() -> None:
    policy = AddressPolicy(
        allow=["127.0.0.1", "10.0.0.0/8"],
        extra_denied=["127.0.0.1:5432", ("127.0.0.1", 6379), "10.9.0.0/16"],
    )
    assert policy.check_address("127.0.0.1", 5432).rule == "internal-service"
    assert policy.check_address("127.0.0.1", 6379).rule == "internal-service"
    assert policy.check_address("127.1", 6379).rule == "internal-service"
    assert policy.check_address("10.9.3.3", 80).rule == "internal-service"
    assert policy.check_address("127.0.0.1", 8000).allowed
    assert policy.check_address("10.1.0.1", 5432).allowed


def test_internal_service_named_by_host_is_refused_by_name_and_by_address() -> None:
    resolver = fake_resolver({"db": ["10.5.0.7"], "redis": ["10.5.0.8"]})
    policy = AddressPolicy(
        allow=["10.0.0.0/8"],
        extra_denied=[("db", 5432), "redis:6379"],
        resolver=resolver,
    )
    assert policy.check_address("10.5.0.7", 5432).rule == "internal-service"
    assert policy.check_address("10.5.0.8", 6379).rule == "internal-service"
    assert policy.check_url("http://db:5432/").rule == "internal-service"
    assert policy.check_url("http://10.5.0.7:5432/").rule == "internal-service"
    assert policy.check_address("10.5.0.7", 80).allowed


def test_allowed_host_name_opens_what_it_resolves_to() -> None:
    resolver = fake_resolver({"status.internal": ["10.1.1.1"], "other.internal": ["10.1.1.1"]})
    policy = AddressPolicy(allow=["status.internal"], resolver=resolver)
    assert policy.check_url("http://status.internal/health").allowed
    assert policy.check_url("http://STATUS.internal./health").allowed
    assert policy.check_url("http://other.internal/health").rule == "private"


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://127.0.0.1/", "loopback"),
        ("http://[::1]:8080/", "loopback"),
        ("http://0x7f000001/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://metadata.test/", "link-local"),
        ("http://rebind.test/", "loopback"),
        ("http://nowhere.test/", "unresolvable"),
        ("ftp://example.test/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("http:///path", "invalid-url"),
        ("not a url at all", "scheme"),
    ],
)
def test_check_url_names_the_rule(url: str, rule: str) -> None:
    resolver = fake_resolver(
        {
            "metadata.test": ["169.254.169.254"],
            # One good and one bad address: refused, because the bad one could be used.
            "rebind.test": ["93.184.216.34", "127.0.0.1"],
        }
    )
    decision = AddressPolicy(resolver=resolver).check_url(url)
    assert (decision.allowed, decision.rule) == (False, rule), decision


def test_resolver_answering_garbage_is_unresolvable() -> None:
    policy = AddressPolicy(resolver=lambda host, port: ["not-an-ip"])
    assert policy.check_url("http://odd.test/").rule == "unresolvable"


def test_check_url_allows_public_name() -> None:
    policy = AddressPolicy(resolver=fake_resolver({"example.test": ["93.184.216.34"]}))
    assert policy.check_url("https://example.test/health").allowed


@pytest.mark.parametrize(
    "url",
    [
        # Python reads the host as 1.1.1.1, a browser (WHATWG) as 127.0.0.1.
        "http://127.0.0.1\\@1.1.1.1/",
        "http://127.0.0.1\\@example.test/health",
        "https://example.test\\.evil.test/",
        "http:\\\\example.test/",
        "http:/\\example.test/",
    ],
)
def test_backslash_in_the_authority_is_refused(url: str) -> None:
    def resolver(host: str, port: int) -> list[str]:
        return {"example.test": ["93.184.216.34"], "1.1.1.1": ["1.1.1.1"]}.get(host, [])

    decision = AddressPolicy(resolver=resolver).check_url(url)
    assert (decision.allowed, decision.rule) == (False, "invalid-url"), decision
    assert "backslash" in decision.message


def test_backslash_after_the_authority_is_only_a_path() -> None:
    policy = AddressPolicy(resolver=fake_resolver({"example.test": ["93.184.216.34"]}))
    assert policy.check_url("https://example.test/a\\b?q=\\").allowed


@pytest.mark.parametrize(
    "entry", ["10.0.0.1/8", "not a host", "127.0.0.1:99999", "[::1", "127.0.0.1:http"]
)
def test_bad_policy_entries_are_rejected(entry: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(entry))):
        AddressPolicy(allow=[entry])


def test_equal_policies_compare_and_hash_equal() -> None:
    assert AddressPolicy(allow=["127.0.0.1"]) == AddressPolicy(allow=["127.0.0.1/32"])
    assert hash(AddressPolicy(allow=["127.0.0.1"])) == hash(AddressPolicy(allow=["127.0.0.1"]))
    assert AddressPolicy(allow=["127.0.0.1"]) != AddressPolicy()


# --- enforcement at connect time, loopback targets only ---------------------------------------


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


@pytest.fixture
def other_target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


def guarded(policy: AddressPolicy, spy: SpyBackend, **options) -> GuardedClient:
    return make_client(policy, inner_backend=spy, timeout=5, **options)


@pytest.mark.anyio
async def test_allowed_request_connects_to_the_checked_ip_and_keeps_the_host_name(
    target: TargetServer,
) -> None:
    spy = SpyBackend()
    policy = AddressPolicy(
        allow=[f"status.test:{target.port}"],
        resolver=fake_resolver({"status.test": ["127.0.0.1"]}),
    )
    async with guarded(policy, spy) as client:
        response = await client.get(f"http://status.test:{target.port}/echo")
    assert response.json()["host"] == f"status.test:{target.port}"
    assert spy.attempts == [("127.0.0.1", target.port)]


@pytest.mark.anyio
async def test_refused_literal_sends_nothing(target: TargetServer) -> None:
    spy = SpyBackend()
    async with guarded(AddressPolicy(), spy) as client:
        with pytest.raises(SSRFBlocked) as blocked:
            await client.get(target.url("/ok"))
    assert blocked.value.decision.rule == "loopback"
    assert spy.attempts == []
    assert target.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize("spelling", ["0x7f000001", "2130706433", "127.1", "[::ffff:127.0.0.1]"])
async def test_odd_spellings_of_loopback_are_refused_before_connect(
    target: TargetServer, spelling: str
) -> None:
    spy = SpyBackend()
    async with guarded(AddressPolicy(), spy) as client:
        with pytest.raises(SSRFBlocked):
            await client.get(f"http://{spelling}:{target.port}/ok")
    assert spy.attempts == []
    assert target.requests == []


@pytest.mark.anyio
async def test_name_resolving_to_refused_address_is_refused_without_connecting(
    target: TargetServer,
) -> None:
    spy = SpyBackend()
    policy = AddressPolicy(resolver=fake_resolver({"innocent.test": ["127.0.0.1"]}))
    async with guarded(policy, spy) as client:
        with pytest.raises(SSRFBlocked) as blocked:
            await client.get(f"http://innocent.test:{target.port}/ok")
    assert blocked.value.decision.rule == "loopback"
    assert spy.attempts == []
    assert target.requests == []


@pytest.mark.anyio
async def test_connect_time_check_catches_an_answer_that_changed_after_validation(
    target: TargetServer,
) -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    spy = SpyBackend()
    policy = AddressPolicy(resolver=rebinding)
    url = f"http://rebind.test:{target.port}/ok"
    assert policy.check_url(url).allowed
    async with guarded(policy, spy) as client:
        with pytest.raises(SSRFBlocked):
            await client.get(url)
    assert spy.attempts == []
    assert target.requests == []


@pytest.mark.anyio
async def test_one_refused_address_among_several_refuses_the_name(target: TargetServer) -> None:
    spy = SpyBackend()
    policy = AddressPolicy(
        allow=[f"127.0.0.1:{target.port}"],
        resolver=fake_resolver({"mixed.test": ["127.0.0.1", "127.0.0.2"]}),
    )
    async with guarded(policy, spy) as client:
        with pytest.raises(SSRFBlocked):
            await client.get(f"http://mixed.test:{target.port}/ok")
    assert spy.attempts == []


@pytest.mark.anyio
async def test_redirect_to_a_port_not_allowed_is_refused(
    target: TargetServer, other_target: TargetServer
) -> None:
    spy = SpyBackend()
    policy = AddressPolicy(allow=[f"127.0.0.1:{target.port}"])
    async with guarded(policy, spy, follow_redirects=True) as client:
        with pytest.raises(SSRFBlocked) as blocked:
            await client.get(target.url(f"/redirect?to={other_target.url('/ok')}"))
    assert blocked.value.decision.rule == "loopback"
    assert target.paths() == ["/redirect"]
    assert other_target.requests == []
    assert spy.attempts == [("127.0.0.1", target.port)]


@pytest.mark.anyio
async def test_redirect_to_an_allowed_port_is_followed(
    target: TargetServer, other_target: TargetServer
) -> None:
    spy = SpyBackend()
    policy = AddressPolicy(allow=[f"127.0.0.1:{target.port}", f"127.0.0.1:{other_target.port}"])
    async with guarded(policy, spy, follow_redirects=True) as client:
        response = await client.get(target.url(f"/redirect?to={other_target.url('/ok')}"))
    assert response.json()["status"] == "ok"
    assert other_target.paths() == ["/ok"]


@pytest.mark.anyio
async def test_app_service_port_refused_even_with_loopback_allowed(
    target: TargetServer, other_target: TargetServer
) -> None:
    spy = SpyBackend()
    policy = AddressPolicy(allow=["127.0.0.1"], extra_denied=[("127.0.0.1", other_target.port)])
    async with guarded(policy, spy) as client:
        assert (await client.get(target.url("/ok"))).status_code == 200
        with pytest.raises(SSRFBlocked) as blocked:
            await client.get(other_target.url("/ok"))
    assert blocked.value.decision.rule == "internal-service"
    assert other_target.requests == []
    assert spy.attempts == [("127.0.0.1", target.port)]


@pytest.mark.anyio
async def test_client_ignores_proxy_environment(
    target: TargetServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy would open the connection on our behalf, past the guard.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    spy = SpyBackend()
    async with guarded(AddressPolicy(allow=["127.0.0.1"]), spy) as client:
        assert (await client.get(target.url("/ok"))).status_code == 200
    assert spy.attempts == [("127.0.0.1", target.port)]


@pytest.mark.anyio
async def test_client_keeps_no_cookies_between_checks(target: TargetServer) -> None:
    # One project's session cookie must not be sent on another project's check.
    async with guarded(AddressPolicy(allow=["127.0.0.1"]), SpyBackend()) as client:
        first = await client.get(target.url("/cookie"))
        second = await client.get(target.url("/echo"))
    assert first.headers["Set-Cookie"].startswith("session=")
    assert second.json()["cookie"] is None


# --- inside a loopback-only network namespace ------------------------------------------------

_AUDIT: LoopbackOnlyAuditHook | None = None


@pytest.fixture
def loopback_only() -> LoopbackOnlyAuditHook:
    """Runs only in the namespace subprocess; proves where we are and watches every connect."""
    global _AUDIT
    assert INSIDE_NETNS, "runs inside a loopback-only network namespace, via test_netns_suite"
    assert [name for _, name in socket.if_nameindex()] == ["lo"]
    if _AUDIT is None:
        _AUDIT = LoopbackOnlyAuditHook().install()
    _AUDIT.refused.clear()
    return _AUDIT


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://10.0.0.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
    ],
)
async def netns_inner_literal_refused_before_any_socket(
    loopback_only: LoopbackOnlyAuditHook, url: str, rule: str
) -> None:
    # The real inner backend, not a spy: the audit hook is the witness at the socket level.
    connects_before = len(loopback_only.loopback)
    async with make_client(AddressPolicy(), timeout=2) as client:
        with pytest.raises(SSRFBlocked) as blocked:
            await client.get(url)
    assert blocked.value.decision.rule == rule
    assert loopback_only.refused == []
    assert len(loopback_only.loopback) == connects_before


@pytest.mark.anyio
async def netns_inner_name_resolving_to_metadata_refused(
    loopback_only: LoopbackOnlyAuditHook,
) -> None:
    spy = SpyBackend()
    policy = AddressPolicy(
        resolver=fake_resolver({"metadata.test": ["169.254.169.254", "93.184.216.34"]})
    )
    async with guarded(policy, spy) as client:
        with pytest.raises(SSRFBlocked) as blocked:
            await client.get("http://metadata.test/computeMetadata/v1/")
    assert blocked.value.decision.rule == "link-local"
    assert spy.attempts == []
    assert loopback_only.refused == []


@pytest.mark.anyio
async def netns_inner_redirect_to_metadata_refused(
    loopback_only: LoopbackOnlyAuditHook, target: TargetServer
) -> None:
    spy = SpyBackend()
    policy = AddressPolicy(allow=[f"127.0.0.1:{target.port}"])
    async with guarded(policy, spy, follow_redirects=True) as client:
        with pytest.raises(SSRFBlocked) as blocked:
            await client.get(target.url("/redirect?to=http://169.254.169.254/latest/"))
    assert blocked.value.decision.rule == "link-local"
    assert spy.attempts == [("127.0.0.1", target.port)]
    assert loopback_only.refused == []


@pytest.mark.anyio
async def netns_inner_engine_reports_refusal_as_failed_result(
    loopback_only: LoopbackOnlyAuditHook,
) -> None:
    from monitoring.lib.engine import CheckSpec, run_checks

    results = await run_checks(
        [
            CheckSpec("meta", "GET", "http://169.254.169.254/latest/meta-data/"),
            CheckSpec("private", "GET", "http://10.0.0.1:8080/health"),
        ]
    )
    assert [r.passed for r in results] == [False, False]
    assert results[0].error is not None and "(link-local)" in results[0].error
    assert results[1].error is not None and "(private)" in results[1].error
    assert loopback_only.refused == []


def test_netns_suite() -> None:
    """Run the netns_inner tests in a new network namespace that has only loopback."""
    # The inner cases are named netns_inner_* so that only this run collects them: a normal run
    # neither executes nor skips them.
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("needs unshare(1) and ip(8) (util-linux and iproute2)")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.fail(f"cannot create a network namespace: {probe.stderr.decode().strip()}")
    root = Path(__file__).resolve().parents[2]
    command = [
        "unshare",
        "--net",
        "sh",
        "-c",
        'ip link set lo up && exec "$@"',
        "sh",
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:django",
        "-p",
        "no:cacheprovider",
        "-q",
        "-o",
        "python_functions=netns_inner_*",
        "-k",
        "netns_inner",
        str(Path(__file__).resolve()),
    ]
    completed = subprocess.run(
        command,
        cwd=root,
        env={**os.environ, NETNS_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    passed = re.search(r"(\d+) passed", output)
    assert passed is not None and int(passed.group(1)) == 7, output
    assert "skipped" not in output, output
