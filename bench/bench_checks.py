"""Health checks per second from one worker process, next to prometheus-blackbox-exporter.

    .venv/bin/python bench/bench_checks.py [--targets 4] [--checks 20000] [--probes 20000]

Goals (issue 6): at least 1,000 checks/s from one worker process, and at least as many as
Prometheus's blackbox exporter driven as fast as it goes (ratio >= 1.0). The verdict, the
PASS/FAIL lines and the exit code are decided on the worker path with plain asyncio, which is
what a Celery worker runs (`services.run_async` uses `asyncio.run`; uvloop is measured and
printed for information only).

Starts N tiny keep-alive HTTP servers on 127.0.0.1 (one subprocess), installs Debian's
prometheus-blackbox-exporter when it is missing (as root: apt-get), then measures:

1. the engine alone: `run_checks` with an address policy, the per-host limit workers use
   (`engine.PER_HOST_LIMIT`), a hard timeout per check and two assertions (status, JSON path),
   on aiohttp with the guarding resolver (issue 14). A short sweep first shows how other
   per-host limits would fare on this machine;
2. aiohttp alone, bare GETs at the same concurrency through a session with the guarding
   resolver, no engine (the ceiling for the engine), and httpx alone for comparison;
3. blackbox exporter: /probe?module=http_2xx (status 200 + body regex, the same work), driven by
   httpx AsyncClients at the concurrency a sweep finds best, and by a minimal raw keep-alive
   client at the concurrency its own sweep finds best (up to 128 connections: the exporter
   still gains past 32), which shows what the exporter itself can do once the Python driver is
   not the limit. The better of the two is the exporter's figure;
4. the worker path: what the Celery task `monitoring.tasks.run_batch` runs for each dispatched
   batch (`services.run_batch`: claim the batch, load the checks, plan, run them through one
   runner, store every result, add them to the hourly and daily rollups, move states, evaluate
   targets), batch after batch, on PostgreSQL (DATABASE_URL, default
   postgres://postgres@127.0.0.1:5432/rc_bench_checks; created and migrated if missing; only
   the project "bench-checks" in it is touched, recreated each run).

The final runs are interleaved in rounds (engine, worker path, blackbox, ...) so that load from
other processes on a shared machine weighs on every contender alike.

Everything listens on and connects to 127.0.0.1 only. Every phase is bounded in count and in
time (--phase-seconds), and the child processes are stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import benchdb  # the scripts run from bench/, which is first on sys.path
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402

from monitoring.lib.engine import (  # noqa: E402
    MAX_CONNECTIONS,
    PER_HOST_LIMIT,
    CheckSpec,
    run_checks,
)
from monitoring.lib.ssrf import AddressPolicy, GuardedResolver  # noqa: E402

BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
BLACKBOX_PACKAGE = "prometheus-blackbox-exporter"
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/rc_bench_checks"
SLUG = "bench-checks"
GOAL_RATE = 1_000.0
GOAL_RATIO = 1.0
ASSERTIONS = [
    {"type": "status", "equals": 200},
    {"type": "json", "path": "$.status", "op": "equals", "value": "ok"},
]
HEALTH_BODY = b'{"status":"ok","database":"connected"}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(HEALTH_BODY)).encode()
    + b"\r\n\r\n"
    + HEALTH_BODY
)


# --- target servers (child process) ------------------------------------------------------------


class _HealthProtocol(asyncio.Protocol):
    """Answers every request with the same 200 JSON; enough HTTP/1.1 for GET with keep-alive."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answers = 0
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            self.buffer = self.buffer[end + 4 :]
            answers += 1
        if answers:
            self.transport.write(RESPONSE * answers)  # type: ignore[attr-defined]
        if len(self.buffer) > 65536:
            self.transport.close()


async def _serve(count: int, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(_HealthProtocol, "127.0.0.1", 0, backlog=1024)
        for _ in range(count)
    ]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print(json.dumps(ports), flush=True)
    # The parent stops us; the sleep is the upper bound if it never does.
    await asyncio.sleep(seconds)


def _run_loop(main: Awaitable[object], use_uvloop: bool) -> object:
    if use_uvloop:
        import uvloop

        return uvloop.run(main)  # type: ignore[arg-type]
    return asyncio.run(main)  # type: ignore[arg-type]


@contextlib.contextmanager
def target_servers(count: int, lifetime: float) -> Iterator[list[int]]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(count), "--serve-seconds", str(lifetime)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline() if child.stdout else ""
        if not line:
            raise RuntimeError("target servers did not start")
        yield json.loads(line)
    finally:
        child.terminate()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)


# --- phases ------------------------------------------------------------------------------------


def report(name: str, done: int, ok: int, seconds: float, latencies: list[float]) -> float:
    rate = done / seconds if seconds else 0.0
    latency = ""
    if latencies:
        ordered = sorted(latencies)
        p50 = statistics.median(ordered)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        latency = f"  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
    print(f"{name:<44} {done:>6} in {seconds:6.2f} s = {rate:8.0f}/s  ok {ok}{latency}")
    return rate


async def _workers(total: int, concurrency: int, deadline: float, job: Callable) -> int:
    """Run job(i) for i < total with `concurrency` workers, stopping at the deadline."""
    counter = iter(range(total))
    done = 0

    async def worker() -> None:
        nonlocal done
        for i in counter:
            if time.perf_counter() > deadline:
                return
            await job(i)
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def bare_httpx(
    ports: list[int], total: int, per_host: int, seconds: float, one_pool: bool
) -> float:
    """Plain httpx GETs, no engine: the ceiling for anything built on httpx."""

    if one_pool:
        size = per_host * len(ports)
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        clients = [httpx.AsyncClient(limits=limits, trust_env=False)] * len(ports)
    else:
        limits = httpx.Limits(max_connections=per_host, max_keepalive_connections=per_host)
        clients = [httpx.AsyncClient(limits=limits, trust_env=False) for _ in ports]
    ok = 0

    async def job(i: int) -> None:
        nonlocal ok
        target = i % len(ports)
        response = await clients[target].get(f"http://127.0.0.1:{ports[target]}/ok")
        ok += response.status_code == 200

    started = time.perf_counter()
    try:
        done = await _workers(total, per_host * len(ports), started + seconds, job)
    finally:
        for client in set(clients):
            await client.aclose()
    elapsed = time.perf_counter() - started
    label = "one pool" if one_pool else "one pool per target"
    return report(f"httpx alone, {label}", done, ok, elapsed, [])


async def bare_aiohttp(ports: list[int], total: int, per_host: int, seconds: float) -> float:
    """Plain aiohttp GETs through the guarding resolver, no engine (no limits, timeouts or
    assertions): the engine's ceiling."""
    policy = AddressPolicy(allow=[f"127.0.0.1:{p}" for p in ports])
    ok = 0
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(policy), use_dns_cache=False, limit_per_host=per_host
    )
    async with aiohttp.ClientSession(connector=connector) as session:

        async def job(i: int) -> None:
            nonlocal ok
            target = i % len(ports)
            async with session.get(f"http://127.0.0.1:{ports[target]}/ok") as response:
                await response.read()
                ok += response.status == 200

        started = time.perf_counter()
        done = await _workers(total, per_host * len(ports), started + seconds, job)
        elapsed = time.perf_counter() - started
    return report("aiohttp alone, guarding resolver", done, ok, elapsed, [])


async def engine(
    ports: list[int],
    total: int,
    per_host: int,
    connections: int,
    seconds: float,
    label: str,
) -> float:
    policy = AddressPolicy(allow=[f"127.0.0.1:{p}" for p in ports])
    specs = [
        CheckSpec(
            i, "GET", f"http://127.0.0.1:{ports[i % len(ports)]}/ok", {}, None, 5.0, ASSERTIONS
        )
        for i in range(total)
    ]
    started = time.perf_counter()
    try:
        async with asyncio.timeout(seconds):
            results = await run_checks(
                specs,
                policy=policy,
                per_host_limit=per_host,
                max_connections=connections,
            )
    except TimeoutError:
        print(
            f"engine ({label}) did not finish within {seconds:g} s",
            file=sys.stderr,
        )
        return 0.0
    elapsed = time.perf_counter() - started
    ok = sum(r.passed for r in results)
    errors = {r.error for r in results if r.error}
    if errors:
        print(f"  errors: {sorted(errors)[:3]}", file=sys.stderr)
    latencies = [r.latency_ms for r in results if r.latency_ms is not None]
    return report(f"engine run_checks ({label})", len(results), ok, elapsed, latencies)


def ensure_blackbox() -> bool:
    """Install Debian's exporter when it is missing; False (and why) when that cannot be done."""
    if Path(BLACKBOX).exists():
        return True
    if os.geteuid() != 0:
        print(
            f"FAIL  {BLACKBOX} is missing and installing it needs root: run this as root, or "
            f"apt-get install -y {BLACKBOX_PACKAGE}"
        )
        return False
    print(f"-- {BLACKBOX} missing: installing {BLACKBOX_PACKAGE} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", BLACKBOX_PACKAGE],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            print(f"FAIL  {' '.join(command)} exited with {done.returncode}:")
            print((done.stderr or done.stdout)[-2000:])
            return False
    if not Path(BLACKBOX).exists():
        print(f"FAIL  {BLACKBOX_PACKAGE} is installed but {BLACKBOX} is not there")
        return False
    return True


# --- the worker path (Django, PostgreSQL) --------------------------------------------------------


def setup_django() -> str:
    return benchdb.setup_django(DEFAULT_DB)


def prepare_worker_checks(ports: list[int], count: int) -> list[int]:
    """A project whose staging environment allows the targets, and `count` checks spread over
    them with the engine phase's assertions: the rows a dispatched batch points at."""
    from django.db import connection, transaction

    from monitoring.models import Check, EnvironmentMonitoring
    from releasecenter.models import Environment, Project

    old = Project.objects.filter(slug=SLUG).first()
    if old is not None:
        with connection.cursor() as cursor:
            for table in ("monitoring_checkresult", "monitoring_checkrollup"):
                cursor.execute(
                    f"DELETE FROM {table} WHERE health_check_id IN "  # noqa: S608
                    "(SELECT id FROM monitoring_check WHERE project_id = %s)",
                    [old.pk],
                )
        old.delete()
    with transaction.atomic():
        project = Project.objects.create(slug=SLUG, name="Bench checks")
        env = Environment.objects.create(project=project, name="staging")
        EnvironmentMonitoring.objects.create(
            environment=env, allow_list="\n".join(f"127.0.0.1:{p}" for p in ports)
        )
        checks = Check.objects.bulk_create(
            Check(
                project=project,
                environment=env,
                name=f"check {i:05}",
                url=f"http://127.0.0.1:{ports[i % len(ports)]}/ok",
                assertions=ASSERTIONS,
                timeout_seconds=5.0,
            )
            for i in range(count)
        )
    # Each run deletes the last run's rows and updates every check a few times per round, and
    # autovacuum cannot keep up with that between runs: without this the worker would be timed
    # against tens of thousands of dead rows that a production database's autovacuum would
    # have reclaimed. Before the clock, like the rest of the setup.
    with connection.cursor() as cursor:
        for table in ("monitoring_check", "monitoring_checkresult", "monitoring_checkrollup"):
            cursor.execute(f"VACUUM (ANALYZE) {table}")
    return [c.pk for c in checks]


def worker_path(ids: list[int], seconds: float) -> float:
    """Batch after batch, what the Celery task run_batch does with each (services.run_batch).

    Claiming (beat's dispatch) happens before the clock starts: it is not the worker's work.
    """
    from django.db.models import Count, Q

    from monitoring import services
    from monitoring.models import Check, CheckResult, CheckRollup
    from releasecenter.celery import prepare_worker_process

    # What a worker process does once it has started (Celery's worker_process_init).
    prepare_worker_process()
    batches = []
    for start in range(0, len(ids), services.RUN_BATCH):
        token, batch = uuid.uuid4(), ids[start : start + services.RUN_BATCH]
        Check.objects.filter(pk__in=batch).update(dispatch_token=token)
        batches.append((token, batch))
    before = CheckResult.objects.filter(health_check__project__slug=SLUG).count()
    started = time.perf_counter()
    outcomes = []
    for token, batch in batches:
        if time.perf_counter() - started > seconds:
            print(f"worker path stopped after {seconds:g} s", file=sys.stderr)
            break
        # What the task gets from the dispatcher: the batch's token and its check ids.
        outcomes.extend(services.run_batch(token, batch))
    elapsed = time.perf_counter() - started
    stored = CheckResult.objects.filter(health_check__project__slug=SLUG).aggregate(
        n=Count("pk"), ok=Count("pk", filter=Q(passed=True))
    )
    if stored["n"] - before != len(outcomes):
        print(f"  stored {stored['n'] - before} results for {len(outcomes)} runs", file=sys.stderr)
        return 0.0
    if not CheckRollup.objects.filter(health_check__project__slug=SLUG).exists():
        print("  no rollups were written", file=sys.stderr)
        return 0.0
    errors = {o.error for o in outcomes if o.error}
    if errors:
        print(f"  errors: {sorted(errors)[:3]}", file=sys.stderr)
    latencies = [o.latency_ms for o in outcomes if o.latency_ms is not None]
    ok = sum(o.passed for o in outcomes)
    return report(
        f"worker path run_batch x{len(batches)} (asyncio)", len(outcomes), ok, elapsed, latencies
    )


@contextlib.contextmanager
def blackbox_exporter() -> Iterator[int]:
    with tempfile.TemporaryDirectory() as workdir:
        config = Path(workdir, "blackbox.yml")
        config.write_text(
            "modules:\n"
            "  http_2xx:\n"
            "    prober: http\n"
            "    timeout: 5s\n"
            "    http:\n"
            "      preferred_ip_protocol: ip4\n"
            "      ip_protocol_fallback: false\n"
            "      valid_status_codes: [200]\n"
            '      fail_if_body_not_matches_regexp: [\'"status":\\s*"ok"\']\n'
        )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        child = subprocess.Popen(
            [
                BLACKBOX,
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            else:
                raise RuntimeError("blackbox exporter did not start")
            yield port
        finally:
            child.terminate()
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)


def _probe_path(target_port: int) -> str:
    target = urllib.parse.quote(f"http://127.0.0.1:{target_port}/ok", safe="")
    return f"/probe?target={target}&module=http_2xx"


async def blackbox_httpx(
    bb_port: int, ports: list[int], total: int, concurrency: int, seconds: float
) -> float:
    """Probes sent by httpx clients of 4 connections each: httpcore's pool slows down as it
    grows, so this gives the driver the same small-pool advantage the engine has."""

    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    clients = [
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{bb_port}", limits=limits, timeout=10, trust_env=False
        )
        for _ in range(max(1, concurrency // 4))
    ]
    ok = 0
    latencies: list[float] = []

    async def job(i: int) -> None:
        nonlocal ok
        started = time.perf_counter()
        response = await clients[i % len(clients)].get(_probe_path(ports[i % len(ports)]))
        latencies.append((time.perf_counter() - started) * 1000)
        ok += "\nprobe_success 1" in response.text

    started = time.perf_counter()
    try:
        done = await _workers(total, concurrency, started + seconds, job)
    finally:
        for client in clients:
            await client.aclose()
    elapsed = time.perf_counter() - started
    return report(f"blackbox exporter, httpx driver x{concurrency}", done, ok, elapsed, latencies)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        parts.append(await reader.readexactly(size + 2))
        if size == 0:
            return b"".join(parts)


async def blackbox_raw(
    bb_port: int, ports: list[int], total: int, concurrency: int, seconds: float
) -> float:
    """The same probes through a minimal keep-alive client, to find the exporter's ceiling."""
    ok = 0

    counter = iter(range(total))

    async def connection(deadline: float) -> int:
        nonlocal ok
        reader, writer = await asyncio.open_connection("127.0.0.1", bb_port)
        done = 0
        try:
            for i in counter:
                if time.perf_counter() > deadline:
                    break
                path = _probe_path(ports[i % len(ports)])
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                if b"transfer-encoding: chunked" in head:
                    body = await _read_chunked(reader)
                else:
                    length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
                    body = await reader.readexactly(length)
                ok += b"\nprobe_success 1" in body
                done += 1
        finally:
            writer.close()
        return done

    started = time.perf_counter()
    counts = await asyncio.gather(*(connection(started + seconds) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return report(f"blackbox exporter, raw driver x{concurrency}", sum(counts), ok, elapsed, [])


# --- main --------------------------------------------------------------------------------------


def verdict_line(goal_met: bool, text: str) -> str:
    return f"{'PASS' if goal_met else 'FAIL'}  {text}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=4)
    parser.add_argument("--checks", type=int, default=20_000, help="checks in the final runs")
    parser.add_argument("--probes", type=int, default=20_000, help="probes in the final runs")
    parser.add_argument("--sweep", type=int, default=4_000, help="requests per sweep setting")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved final rounds")
    parser.add_argument("--connections", type=int, default=MAX_CONNECTIONS)
    parser.add_argument("--phase-seconds", type=float, default=60.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-seconds", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            _run_loop(_serve(args.serve, args.serve_seconds), use_uvloop=_has_uvloop())
        return 0

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.targets} targets")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if not ensure_blackbox():
        return 1
    database = setup_django()
    phase = args.phase_seconds
    rounds = max(1, args.rounds)
    checks, probes = max(1, args.checks // rounds), max(1, args.probes // rounds)
    # Every phase is bounded by `phase` seconds: 4 + 3 + 5 + 6 sweeps, then 6 per round.
    with target_servers(args.targets, phase * (18 + 6 * rounds) + 60) as ports:
        print("-- sweep: engine per-host limit (asyncio), for information")
        sweep = {
            per_host: _run_loop(
                engine(
                    ports, args.sweep, per_host, args.connections, phase, f"per-host {per_host}"
                ),
                False,
            )
            for per_host in (1, 2, 4, 8)
        }
        best = max(sweep, key=sweep.__getitem__)
        print(
            f"   best here: per-host {best}; workers use engine.PER_HOST_LIMIT = "
            f"{PER_HOST_LIMIT}, and so do the final runs"
        )
        print(f"-- bare clients at per-host {PER_HOST_LIMIT}, for reference")
        _run_loop(bare_httpx(ports, args.sweep, PER_HOST_LIMIT, phase, False), False)
        _run_loop(bare_aiohttp(ports, args.sweep, PER_HOST_LIMIT, phase), False)
        print(f"-- worker path: {checks} checks in {database} (project {SLUG})")
        ids = prepare_worker_checks(ports, checks)
        with blackbox_exporter() as bb_port:
            print("-- sweep: blackbox exporter, httpx driver concurrency (uvloop)")
            bb_sweep = {
                conc: _run_loop(
                    blackbox_httpx(bb_port, ports, args.sweep, conc, phase), _has_uvloop()
                )
                for conc in (2, 4, 8, 16, 32)
            }
            conc = max(bb_sweep, key=bb_sweep.__getitem__)
            print("-- sweep: blackbox exporter, raw driver concurrency")
            raw_sweep = {
                raw: _run_loop(blackbox_raw(bb_port, ports, args.sweep, raw, phase), False)
                for raw in (4, 8, 16, 32, 64, 128)
            }
            raw = max(raw_sweep, key=raw_sweep.__getitem__)

            # The machine may be shared; interleaving the contenders round by round spreads any
            # outside load over all of them instead of landing on one.
            print(
                f"-- final: {rounds} interleaved rounds of {checks} checks / {probes} probes"
                f" (per-host {PER_HOST_LIMIT}, httpx driver x{conc}, raw driver x{raw})"
            )
            rates: dict[str, list[float]] = {}
            for _ in range(rounds):
                rates.setdefault("engine, asyncio", []).append(
                    _run_loop(
                        engine(ports, checks, PER_HOST_LIMIT, args.connections, phase, "asyncio"),
                        False,
                    )
                )
                if _has_uvloop():
                    rates.setdefault("engine, uvloop", []).append(
                        _run_loop(
                            engine(
                                ports, checks, PER_HOST_LIMIT, args.connections, phase, "uvloop"
                            ),
                            True,
                        )
                    )
                rates.setdefault("worker path, asyncio", []).append(worker_path(ids, phase))
                rates.setdefault("blackbox, httpx driver", []).append(
                    _run_loop(blackbox_httpx(bb_port, ports, probes, conc, phase), _has_uvloop())
                )
                rates.setdefault("blackbox, raw driver", []).append(
                    _run_loop(blackbox_raw(bb_port, ports, probes, raw, phase), False)
                )

    # Equal work per round, so the overall rate is the harmonic mean of the round rates.
    overall = {
        name: len(values) / sum(1 / v for v in values) if all(values) else 0.0
        for name, values in rates.items()
    }
    print()
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    for name, rate in overall.items():
        print(f"{name:<28} {rate:8.0f}/s")
    # "Driven as fast as it goes": the exporter is credited with its better driver.
    theirs_name = max(("blackbox, httpx driver", "blackbox, raw driver"), key=overall.__getitem__)
    theirs = overall[theirs_name]
    print(f"blackbox exporter, as fast as it goes: {theirs:.0f}/s ({theirs_name})")
    print()

    def ratio(name: str) -> float:
        return overall[name] / theirs if theirs else 0.0

    for name in [n for n in overall if n.startswith("engine")]:
        note = "  (not what workers run)" if "uvloop" in name else ""
        print(f"   {name}: {overall[name]:.0f}/s, {ratio(name):.2f} x blackbox{note}")
    decisive = "worker path, asyncio"
    rate, times = overall[decisive], ratio(decisive)
    print(
        "Verdict on the worker path with plain asyncio, as a Celery worker runs it "
        "(run_batch: run, store results and rollups):"
    )
    print(
        verdict_line(
            times >= GOAL_RATIO,
            f"ratio against blackbox exporter {times:.2f} (goal >= {GOAL_RATIO:.1f}): "
            f"{rate:.0f}/s vs {theirs:.0f}/s",
        )
    )
    print(
        verdict_line(rate >= GOAL_RATE, f"checks per second {rate:.0f} (goal >= {GOAL_RATE:,.0f})")
    )
    return 0 if times >= GOAL_RATIO and rate >= GOAL_RATE else 1


def _has_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


if __name__ == "__main__":
    sys.exit(main())
