"""Outbound address policy for health checks, enforced where the socket is opened.

Health checks let project members make this server send HTTP requests to URLs they choose, which
is a server-side request forgery surface: cloud metadata (169.254.169.254), our own PostgreSQL and
Redis, loopback admin ports, the private network the server sits in. This module decides which
(address, port) pairs may be contacted and enforces that decision in the connection layer.

Two halves:

* Decisions (pure, no I/O unless you ask `check_url` to resolve): `AddressPolicy.check_address`,
  `AddressPolicy.check_url` and `parse_host_literal`. The API calls `check_url` to answer 400 with
  the rule name when a check is saved; that is only early feedback.
* Enforcement, in two clients:
  - health checks (monitoring.lib.engine, on aiohttp): `GuardedResolver` is the connector's
    resolver. aiohttp asks it for every new connection to a host name, redirects and proxies
    included; it resolves the name itself, judges every address and returns only judged ones,
    which aiohttp then connects to, the Host header and TLS SNI still carrying the name. So a
    DNS answer that changes between `check_url` and the request (DNS rebinding) cannot slip
    through. IP literals never reach a resolver, so the engine judges each hop's literal host
    with `judge_literal` before sending it.
  - notifications and deployment webhooks (low volume, httpx): `make_client(policy)` returns an
    httpx.AsyncClient on `GuardedTransport`, an httpx transport over an httpcore pool whose
    `network_backend` is `GuardedNetworkBackend`, which does the same resolve-judge-connect for
    every TCP connection httpcore opens. Both are public hooks of those libraries; nothing here
    patches a library or reaches into its private attributes.

Clients keep no cookies and ignore proxy settings from the environment: a proxy would connect
on our behalf, past the guard. A proxy a project admin sets for an environment is judged like
any target (its own address, through the same resolver).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import httpcore
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A resolver maps (host name, port) to IP address strings. Tests inject one so that no test ever
# depends on, or sends, a real DNS query.
Resolver = Callable[[str, int], Iterable[str]]

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: str
    message: str


class SSRFBlocked(Exception):
    """A connection the address policy refused; raised before any socket is opened."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(f"{decision.rule}: {decision.message}")
        self.decision = decision


# --- host literals -----------------------------------------------------------------------------

_DIGITS = {8: set("01234567"), 10: set("0123456789"), 16: set("0123456789abcdefABCDEF")}


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """Interpret an IPv4 spelling the way inet_aton(3) does, or return None.

    getaddrinfo accepts these forms too, so "http://2130706433/" and "http://127.1/" really do
    reach 127.0.0.1; a guard that only recognised dotted quads would let them through.
    """
    if text.endswith("."):
        # "127.0.0.1." is the same address written as a fully qualified name.
        text = text[:-1]
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        if part[:2] in ("0x", "0X"):
            base, digits = 16, part[2:]
            if digits == "":
                # inet_aton reads a bare "0x" as zero.
                digits = "0"
        elif len(part) > 1 and part[0] == "0":
            base, digits = 8, part[1:]
        else:
            base, digits = 10, part
        # int() would also accept "+", "_" and spaces, which inet_aton does not.
        if digits == "" or not set(digits) <= _DIGITS[base]:
            return None
        values.append(int(digits, base))
    *leading, last = values
    if any(v > 255 for v in leading) or last >= 256 ** (4 - len(leading)):
        return None
    number = last
    for index, value in enumerate(leading):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIIT = ipaddress.IPv6Network("::ffff:0:0:0/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def normalise_address(address: IPAddress) -> IPAddress:
    """Return the IPv4 address an IPv6 form really reaches, else the address itself.

    ::ffff:127.0.0.1 connects to 127.0.0.1 on a dual-stack socket, and NAT64 / 6to4 forms are
    forwarded to the embedded IPv4 address, so each must be judged as that IPv4 address.
    """
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64 or address in _SIIT:
        return low32
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        # Deprecated IPv4-compatible form ::a.b.c.d; :: and ::1 keep their own meaning.
        return low32
    return address


def parse_host_literal(host: str) -> IPAddress | None:
    """Return the (normalised) IP address a URL host spells, or None if it is a name.

    Accepts "[::1]", "::1", "fe80::1%eth0", "127.0.0.1" and every inet_aton form: "2130706433",
    "0x7f000001", "0177.0.0.1", "127.1".
    """
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            return normalise_address(ipaddress.IPv6Address(host))
        except ValueError:
            return None
    return _inet_aton(host)


# --- the policy --------------------------------------------------------------------------------


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Ordered: the first matching range names the rule. Written out rather than taken from
# ipaddress's is_private/is_global because those flags changed between Python releases.
_DENIED_RANGES: tuple[tuple[str, str, tuple[IPNetwork, ...]], ...] = (
    (
        "unspecified",
        "is the unspecified address, which connects to this host",
        _nets("0.0.0.0/8", "::/128"),
    ),
    ("loopback", "is a loopback address", _nets("127.0.0.0/8", "::1/128")),
    (
        "link-local",
        "is link-local (where cloud metadata services live)",
        _nets("169.254.0.0/16", "fe80::/10"),
    ),
    (
        "private",
        "is in a private network range",
        _nets(
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "fc00::/7",
            "fec0::/10",
        ),
    ),
    ("multicast", "is a multicast address", _nets("224.0.0.0/4", "ff00::/8")),
    (
        "reserved",
        "is in a reserved or special-purpose range",
        _nets(
            "192.0.0.0/24",
            "192.0.2.0/24",
            "192.88.99.0/24",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "240.0.0.0/4",
            "64:ff9b:1::/48",
            "100::/64",
            "2001::/32",
            "2001:10::/28",
            "2001:20::/28",
            "2001:db8::/32",
        ),
    ),
)
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_ALL_V6 = ipaddress.IPv6Network("::/0")

# An allow-list cannot open these: connecting to 0.0.0.0 reaches this host, and multicast is
# never an HTTP server.
_NEVER_ALLOWED = frozenset({"unspecified", "multicast"})


def _category(address: IPAddress) -> tuple[str, str, IPNetwork] | None:
    """Return (rule, reason, range) for an address denied by default, None for public ones."""
    for rule, reason, networks in _DENIED_RANGES:
        for network in networks:
            if address.version == network.version and address in network:
                return rule, reason, network
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return "reserved", "is outside IPv6 global unicast space", _ALL_V6
    return None


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_][a-z0-9_-]{0,62})*$"
)


def _canonical_name(host: str) -> str:
    return host.strip().lower().rstrip(".")


@dataclass(frozen=True, slots=True)
class _Entry:
    """One allow-list or deny-list entry: a network or a host name, optionally one port."""

    network: IPNetwork | None
    name: str | None
    port: int | None

    def matches(self, address: IPAddress, port: int, name: str | None) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.name is not None:
            return name is not None and name == self.name
        assert self.network is not None
        return address.version == self.network.version and address in self.network


def _parse_port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r}: port must be 1-65535")
    return int(text)


def _parse_network(text: str, entry: str) -> IPNetwork | None:
    """A CIDR or a single address (any inet_aton spelling), normalised; None if it is a name."""
    address_part, _, prefix = text.partition("/")
    address = parse_host_literal(address_part)
    if address is None:
        if prefix:
            raise ValueError(f"{entry!r} is not a valid CIDR")
        return None
    if not prefix:
        return ipaddress.ip_network(address)
    try:
        # strict: "10.0.0.1/8" is almost certainly a typo for a host or for 10.0.0.0/8, and
        # silently widening it to the whole /8 would open far more than intended.
        if isinstance(address, ipaddress.IPv4Address) and ":" in address_part:
            # ::ffff:10.0.0.0/104 style: the prefix counted 96 bits of IPv6 prefix.
            return ipaddress.IPv4Network(f"{address}/{int(prefix) - 96}")
        return ipaddress.ip_network(f"{address}/{prefix}")
    except ValueError as exc:
        raise ValueError(f"{entry!r} is not a valid CIDR: {exc}") from None


def _parse_entry(entry: str | tuple[str, int | None]) -> _Entry:
    """Parse "10.0.0.0/8", "127.0.0.1:8000", "[::1]:8000", "status.internal[:8443]" or a
    (host-or-CIDR, port-or-None) tuple."""
    if isinstance(entry, tuple):
        host, port = entry
        if port is not None:
            port = _parse_port(str(port), repr(entry))
        text = host.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
    else:
        text, port = entry.strip(), None
        if text.startswith("["):
            inside, bracket, rest = text[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ValueError(f"{entry!r}: unbalanced brackets")
            if rest:
                port = _parse_port(rest[1:], entry)
            text = inside
        elif text.count(":") == 1:
            text, _, port_text = text.partition(":")
            port = _parse_port(port_text, entry)
    network = _parse_network(text, str(entry))
    if network is not None:
        return _Entry(network=network, name=None, port=port)
    name = _canonical_name(text)
    if not _HOSTNAME.match(name):
        raise ValueError(f"{entry!r} is neither an IP address, a CIDR nor a host name")
    return _Entry(network=None, name=name, port=port)


def is_valid_entry(entry: str | tuple[str, int | None]) -> bool:
    """Whether an allow or deny entry parses, without resolving anything."""
    try:
        _parse_entry(entry)
    except ValueError:
        return False
    return True


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def _unique(addresses: Iterable[IPAddress]) -> list[IPAddress]:
    return list(dict.fromkeys(addresses))


class AddressPolicy:
    """Which (address, port) pairs outbound health checks may connect to.

    allow: CIDRs or addresses ("10.20.0.0/16", "127.0.0.1") match the resolved IP; host names
        ("status.internal") match the URL's host name and then allow whatever it resolves to.
        Either may end in ":port" ("127.0.0.1:8000", "[::1]:8000") to allow that port only.
        A CIDR opens a default-denied address only when it lies entirely inside that denied
        range: "10.0.0.0/8" opens 10.x, but "0.0.0.0/0" opens nothing that is denied by default,
        so an over-broad entry cannot expose metadata or loopback by accident.
    extra_denied: this app's own endpoints (database, Redis) as "host:port", (host, port) or CIDR.
        They are refused even when an allow entry covers them. Host names here are resolved once,
        when the policy is built, so build a policy per run rather than keeping one for days.
    allow_public: when False, only allow-listed destinations are reachable (closed networks).
    resolver: (host, port) -> IP strings; defaults to the system's getaddrinfo.
    """

    def __init__(
        self,
        allow: Iterable[str] = (),
        extra_denied: Iterable[str | tuple[str, int | None]] = (),
        *,
        allow_public: bool = True,
        resolver: Resolver | None = None,
    ) -> None:
        self.allow: tuple[_Entry, ...] = tuple(_parse_entry(e) for e in allow)
        self.extra_denied: tuple[_Entry, ...] = tuple(_parse_entry(e) for e in extra_denied)
        self.allow_public = allow_public
        self.resolver = resolver
        self._denied_resolved = self._resolve_denied_names()
        # Engines look their clients up by policy for every check; hashing the entries (their
        # ip_network objects) each time cost more than the rest of the lookup.
        self._hash = hash(self._key())

    def _resolve_denied_names(self) -> tuple[_Entry, ...]:
        # A URL can reach the database by IP as well as by its service name, so the name is
        # turned into addresses too. A name that does not resolve stays a name-only rule.
        resolved = []
        for entry in self.extra_denied:
            if entry.name is None:
                continue
            try:
                addresses = self.resolve(entry.name, entry.port or 0)
            except (OSError, UnicodeError):
                continue
            for address in addresses:
                resolved.append(
                    _Entry(network=ipaddress.ip_network(address), name=None, port=entry.port)
                )
        return tuple(resolved)

    def _key(self) -> tuple[Any, ...]:
        return (self.allow, self.extra_denied, self.allow_public, self.resolver)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AddressPolicy) and self._key() == other._key()

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return (
            f"AddressPolicy(allow={len(self.allow)} entries, "
            f"extra_denied={len(self.extra_denied)} entries, allow_public={self.allow_public})"
        )

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Resolve a host (literal or name) to normalised addresses, synchronously."""
        literal = parse_host_literal(host)
        if literal is not None:
            return [literal]
        resolver = self.resolver or _system_resolver
        return _unique(_to_address(a) for a in resolver(host, port))

    def check_address(self, ip: str | IPAddress, port: int, *, host: str | None = None) -> Decision:
        """Decide whether a connection to ip:port may be opened.

        host is the URL's host name (not a literal) when known; allow and deny entries written
        as names match on it.
        """
        try:
            address = _to_address(ip)
        except ValueError:
            return Decision(False, "invalid-address", f"{ip!r} is not an IP address")
        if not 0 < port < 65536:
            return Decision(False, "invalid-address", f"port {port} is out of range")
        name = _canonical_name(host) if host else None
        where = f"{address}:{port}" if address.version == 4 else f"[{address}]:{port}"
        category = _category(address)

        if category is not None and category[0] in _NEVER_ALLOWED:
            return Decision(False, category[0], f"{where} {category[1]}; refused")
        for entry in (*self.extra_denied, *self._denied_resolved):
            if entry.matches(address, port, name):
                return Decision(
                    False,
                    "internal-service",
                    f"{where} is one of this application's own services; refused",
                )
        for entry in self.allow:
            if not entry.matches(address, port, name):
                continue
            opens_range = (
                category is None
                or entry.name is not None
                or (
                    entry.network is not None
                    and entry.network.version == category[2].version
                    and entry.network.subnet_of(category[2])  # type: ignore[arg-type]
                )
            )
            if opens_range:
                return Decision(True, "allow-list", f"{where} is allow-listed")
        if category is not None:
            return Decision(False, category[0], f"{where} {category[1]}; refused")
        if not self.allow_public:
            return Decision(False, "not-allowed", f"{where} is not on the allow-list")
        return Decision(True, "public", f"{where} is a public address")

    def check_url(self, url: str) -> Decision:
        """Validate a URL before saving it: scheme, host, and every address the host resolves to.

        Resolution happens now and again at connect time; only the connect-time check protects.
        """
        if "\\" in _authority(url):
            # WHATWG parsers (browsers, wherever the URL is shown as a link) end the host at a
            # backslash, Python's at the next "/": "http://127.0.0.1\\@1.1.1.1/" names two hosts.
            return Decision(
                False, "invalid-url", "a backslash before the path makes the host ambiguous"
            )
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            return self._explain_unparseable(url)
        if parsed.scheme not in DEFAULT_PORTS:
            return Decision(False, "scheme", f"scheme {parsed.scheme!r} is not http or https")
        if not parsed.host:
            return Decision(False, "invalid-url", "the URL has no host")
        port = parsed.port or DEFAULT_PORTS[parsed.scheme]
        return self._check_host(parsed.host, port)

    def check_host(self, host: str, port: int) -> Decision:
        """The verdict on a host (name or literal) and port, every address it resolves to
        judged: for destinations that are not http(s) URLs (TCP probes, proxies)."""
        return self._check_host(host, port)

    def _check_host(self, host: str, port: int) -> Decision:
        literal = parse_host_literal(host)
        name = None if literal is not None else host
        try:
            addresses = self.resolve(host, port)
        except (OSError, UnicodeError, ValueError) as exc:
            return Decision(False, "unresolvable", f"{host!r} could not be resolved: {exc}")
        if not addresses:
            return Decision(False, "unresolvable", f"{host!r} has no addresses")
        decision = None
        for address in addresses:
            decision = self.check_address(address, port, host=name)
            if not decision.allowed:
                return decision
        assert decision is not None
        return decision

    def _explain_unparseable(self, url: str) -> Decision:
        # httpx rejects some inet_aton spellings ("0177.0.0.1") outright. The request could not
        # be made anyway, but naming the rule ("loopback") tells the user what they wrote.
        try:
            split = urllib.parse.urlsplit(url)
            host, port = split.hostname, split.port
        except ValueError:
            host, port = None, None
        if host and split.scheme in DEFAULT_PORTS:
            literal = parse_host_literal(host)
            if literal is not None:
                decision = self.check_address(literal, port or DEFAULT_PORTS[split.scheme])
                if not decision.allowed:
                    return decision
        return Decision(False, "invalid-url", f"{url!r} is not a valid URL")


def _authority(url: str) -> str:
    """The part of `url` a parser could read a host from: from the scheme to the path."""
    _scheme, sep, rest = url.partition(":")
    if not sep:
        return ""
    rest = rest.lstrip("/")
    for end in "/?#":
        rest = rest.split(end, 1)[0]
    return rest


def _to_address(ip: str | IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return normalise_address(ip)
    literal = parse_host_literal(ip)
    if literal is None:
        raise ValueError(f"{ip!r} is not an IP address")
    return literal


# --- enforcement -------------------------------------------------------------------------------


def _address_pairs(host: str, raw: Iterable[str]) -> list[tuple[str, IPAddress]]:
    """(address to connect to, normalised address to judge) for a host literal, or for the
    addresses a name resolved to (`raw`)."""
    literal = parse_host_literal(host)
    if literal is not None:
        # Connect to a canonical spelling ("0x7f000001" -> "127.0.0.1") so the socket layer
        # does not re-interpret the text; IPv6 literals keep their form and any zone id.
        bare = host.strip("[]")
        return [(bare if ":" in bare else str(literal), literal)]
    pairs = []
    for text in dict.fromkeys(raw):
        address = ipaddress.ip_address(text.split("%")[0])
        pairs.append((text, normalise_address(address)))
    return pairs


def _judge(
    policy: AddressPolicy, host: str, port: int, pairs: Iterable[tuple[str, IPAddress]]
) -> None:
    """Raise SSRFBlocked unless the policy allows every address the host resolved to.

    Every address must pass, not just the one we would use: a name that answers with one public
    and one internal address is a DNS-rebinding setup, and refusing it keeps the run-time
    verdict identical to what check_url told the user.
    """
    name = None if parse_host_literal(host) is not None else host
    for _, address in pairs:
        decision = policy.check_address(address, port, host=name)
        if not decision.allowed:
            raise SSRFBlocked(decision)


async def resolve_checked(policy: AddressPolicy, host: str, port: int) -> list[str]:
    """The addresses to connect to for host:port, each one allowed by the policy (asyncio).

    The guard for code that opens its own sockets (the aiohttp resolver, TCP probes): resolve
    the name here (the policy's resolver, else getaddrinfo), judge every address, and hand back only
    judged ones. Raises SSRFBlocked for a refusal, OSError when the name does not resolve.
    """
    if parse_host_literal(host) is not None:
        pairs = _address_pairs(host, [])
    else:
        try:
            if policy.resolver is not None:
                resolver = policy.resolver
                raw = await asyncio.to_thread(lambda: list(resolver(host, port)))
            else:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                )
                raw = [str(info[4][0]) for info in infos]
            pairs = _address_pairs(host, raw)
        except (UnicodeError, ValueError) as exc:
            raise OSError(str(exc)) from exc
        if not pairs:
            raise OSError(f"{host!r} has no addresses")
    _judge(policy, host, port, pairs)
    return [connect_to for connect_to, _ in pairs]


def judge_literal(policy: AddressPolicy, host: str, port: int) -> None:
    """Raise SSRFBlocked when `host` spells an IP address (any inet_aton form) the policy
    refuses; names are left to the connect-time resolver.

    aiohttp hands canonical IP literals straight to the socket without asking the resolver, so
    the engine judges every hop's literal host (and a proxy's) with this before it sends. A
    literal cannot change between this check and the connect, unlike a name's DNS answer.
    """
    literal = parse_host_literal(host)
    if literal is None:
        return
    decision = policy.check_address(literal, port)
    if not decision.allowed:
        raise SSRFBlocked(decision)


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that resolves, judges every address, and returns only judged ones.

    aiohttp's connector asks its resolver for every new connection to a host name (the engine
    turns the connector's DNS cache off, so every connect asks), then connects to the addresses
    returned, with the name kept for the Host header and TLS server name. A refusal raises
    SSRFBlocked, which aiohttp lets through unchanged, before any socket is opened.
    """

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results: list[ResolveResult] = []
        for address in await resolve_checked(self.policy, host, port):
            bare = address.split("%")[0]
            results.append(
                {
                    "hostname": host,
                    "host": address,
                    "port": port,
                    "family": socket.AF_INET6 if ":" in bare else socket.AF_INET,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        return results

    async def close(self) -> None:
        return None


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend that resolves, checks, then connects to the checked IP.

    inner is the backend that really opens sockets (httpcore's AnyIO backend by default); tests
    pass a spy here to prove that a refused destination never reaches it.
    """

    def __init__(
        self, policy: AddressPolicy, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self.policy = policy
        self.inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def _resolve(self, host: str, port: int) -> list[tuple[str, IPAddress]]:
        """Return (address to connect to, normalised address to judge) pairs."""
        if parse_host_literal(host) is not None:
            return _address_pairs(host, [])
        if self.policy.resolver is not None:
            raw = await anyio.to_thread.run_sync(lambda: list(self.policy.resolver(host, port)))
        else:
            infos = await anyio.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
            raw = [str(info[4][0]) for info in infos]
        return _address_pairs(host, raw)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                pairs = await self._resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host!r} timed out") from None
        except (OSError, UnicodeError, ValueError) as exc:
            raise httpcore.ConnectError(f"could not resolve {host!r}: {exc}") from exc
        if not pairs:
            raise httpcore.ConnectError(f"{host!r} has no addresses")
        _judge(self.policy, host, port, pairs)
        last_error: Exception | None = None
        for connect_to, _ in pairs:
            try:
                return await self.inner.connect_tcp(
                    connect_to,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise SSRFBlocked(Decision(False, "unix-socket", "unix sockets are never a check target"))

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


# httpcore's exceptions and the httpx ones a caller of an httpx client expects, most specific
# first (the first class an exception is an instance of wins).
_HTTPCORE_TO_HTTPX: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


def _as_httpx_error(exc: Exception, request: httpx.Request) -> Exception:
    for core, mapped in _HTTPCORE_TO_HTTPX:
        if isinstance(exc, core):
            return mapped(str(exc), request=request)
    return exc


class _GuardedResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: Any, request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> Any:
        try:
            async for part in self._stream:
                yield part
        except Exception as exc:
            mapped = _as_httpx_error(exc, self._request)
            if mapped is exc:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        await self._stream.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport on an httpcore pool whose every connection goes through the guard.

    Built on public interfaces only: httpx's `AsyncBaseTransport` and httpcore's
    `AsyncConnectionPool(network_backend=...)`, the hook httpcore offers for exactly this. (httpx's
    own AsyncHTTPTransport takes no network backend.) No proxy, no unix socket, no environment
    configuration: a proxy would connect on our behalf and bypass the check. This client serves
    the low-volume outbound calls (notifications, deployment webhooks); health checks run on the
    aiohttp engine (monitoring.lib.engine) with `GuardedResolver`.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        verify: bool | str = True,
        limits: httpx.Limits | None = None,
        inner_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=10, max_keepalive_connections=10)
        self.policy = policy
        self.network_backend = GuardedNetworkBackend(policy, inner_backend)
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self.network_backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,  # type: ignore[arg-type]
            extensions=request.extensions,
        )
        try:
            response = await self.pool.handle_async_request(core_request)
        except Exception as exc:
            mapped = _as_httpx_error(exc, request)
            if mapped is exc:
                raise
            raise mapped from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_GuardedResponseStream(response.stream, request),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.pool.aclose()


class _NoCookies(httpx.Cookies):
    """A cookie store that keeps and sends nothing.

    Checks are independent: a Set-Cookie answered to one project's check must never ride along
    on another's request to the same host. Skipping the store also saves ~5% of each request's
    CPU, which httpx spends adapting every response for http.cookiejar.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set_cookie_header(self, request: httpx.Request) -> None:
        return None


class GuardedClient(httpx.AsyncClient):
    """An httpx.AsyncClient that remembers the policy its transport enforces and keeps no
    cookies."""

    def __init__(self, policy: AddressPolicy, **kwargs: Any) -> None:
        self.policy = policy
        super().__init__(**kwargs)

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return _NoCookies()

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        # httpx's constructor assigns here; there is nothing to keep.
        return None


def make_client(
    policy: AddressPolicy,
    *,
    timeout: float | httpx.Timeout = 10.0,
    limits: httpx.Limits | None = None,
    verify: bool | str = True,
    follow_redirects: bool = False,
    max_redirects: int = 5,
    headers: dict[str, str] | None = None,
    inner_backend: httpcore.AsyncNetworkBackend | None = None,
) -> GuardedClient:
    """Build the one pooled client that all outbound health-check traffic goes through.

    Redirects are safe to follow: each hop to a new origin opens a new connection, which goes
    through the same guarded backend.
    """
    default_headers = {
        "User-Agent": "ReleaseCenter-HealthCheck/1",
        # Decompressing is where a small response becomes a large one; health endpoints are
        # small, so ask for them uncompressed unless a check sets its own Accept-Encoding.
        "Accept-Encoding": "identity",
    }
    default_headers.update(headers or {})
    return GuardedClient(
        policy,
        transport=GuardedTransport(
            policy, verify=verify, limits=limits, inner_backend=inner_backend
        ),
        timeout=timeout,
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
        headers=default_headers,
        trust_env=False,
    )


__all__ = [
    "AddressPolicy",
    "Decision",
    "GuardedClient",
    "GuardedNetworkBackend",
    "GuardedResolver",
    "GuardedTransport",
    "SSRFBlocked",
    "is_valid_entry",
    "judge_literal",
    "make_client",
    "normalise_address",
    "parse_host_literal",
    "resolve_checked",
]
