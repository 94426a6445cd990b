"""Heartbeat checks: scheduled jobs ping us, and a job that stops pinging is down.

A heartbeat check is a `Check` with probe "heartbeat". It expects a ping every
`heartbeat_period_seconds`, or at the times of `heartbeat_cron` in `heartbeat_timezone` (cronsim,
so a daylight-saving change moves the expected times as the job's own cron does), and allows
`heartbeat_grace_seconds` on top. `heartbeat_due_at` is the moment the check becomes late: the
next expected ping after the last one (or after creation), plus the grace.

Pings arrive at `/ping/<ping_key>` (`/start`, `/fail`), unauthenticated: the key is the secret.
`monitoring.ping` serves them on the ASGI fast path and hands them here in batches
(`record_pings`): a success ping is a passing result (the body's first 10 kB its excerpt) and
moves the due time on; `/fail` is a failing result; `/start` marks the job as running, and the
next success ping's latency is the job's duration. Results, rollups, state changes and
notifications go through the same recording as every other check (`services.record`).

Beat calls `mark_late` every few seconds: a check past its due time that is not failing yet gets
a failing result saying when the ping was expected, which notifies like any failing check.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import redis
from cronsim import CronSim, CronSimError
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from releasecenter import events

from .models import Check, CheckResult, PingInbox

EXCERPT_BYTES = 10 * 1024
MIN_PERIOD_SECONDS = 60
MAX_PERIOD_SECONDS = 366 * 86400
MAX_GRACE_SECONDS = 30 * 86400
DEFAULT_GRACE_SECONDS = 300
# Per check and minute; a job that pings more often is misconfigured or hostile, and each ping
# writes a result.
DEFAULT_PINGS_PER_MINUTE = 60
KINDS = ("success", "start", "fail")

OK, NOT_FOUND, RATE_LIMITED = 200, 404, 429


def pings_per_minute() -> int:
    return int(getattr(settings, "HEARTBEAT_PINGS_PER_MINUTE", DEFAULT_PINGS_PER_MINUTE))


# --- definitions -------------------------------------------------------------------------------


def _zone(name: str) -> ZoneInfo:
    if name not in available_timezones():
        raise ValidationError({"heartbeat_timezone": f"{name!r} is not an IANA time zone."})
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            {"heartbeat_timezone": f"{name!r} is not an IANA time zone."}
        ) from None


def validate(check: Check) -> None:
    """The schedule of a heartbeat check: a period, or a cron expression and a time zone."""
    if check.url:
        raise ValidationError({"url": "A heartbeat check is pinged; it has no URL."})
    if check.interval_seconds is not None:
        raise ValidationError(
            {"interval_seconds": "A heartbeat check is pinged, not run on an interval."}
        )
    if check.assertions:
        raise ValidationError({"assertions": "A heartbeat check has no assertions."})
    period, cron = check.heartbeat_period_seconds, (check.heartbeat_cron or "").strip()
    if (period is None) == (not cron):
        raise ValidationError(
            {"heartbeat_period_seconds": "Give a period in seconds or a cron expression."}
        )
    if period is not None and not MIN_PERIOD_SECONDS <= period <= MAX_PERIOD_SECONDS:
        raise ValidationError(
            {
                "heartbeat_period_seconds": f"A period is {MIN_PERIOD_SECONDS} s to "
                f"{MAX_PERIOD_SECONDS // 86400} days."
            }
        )
    if check.heartbeat_grace_seconds is None:
        check.heartbeat_grace_seconds = DEFAULT_GRACE_SECONDS
    if not 0 <= check.heartbeat_grace_seconds <= MAX_GRACE_SECONDS:
        raise ValidationError(
            {"heartbeat_grace_seconds": f"A grace is 0 to {MAX_GRACE_SECONDS // 86400} days."}
        )
    check.heartbeat_timezone = (check.heartbeat_timezone or "UTC").strip()
    zone = _zone(check.heartbeat_timezone)
    check.heartbeat_cron = cron
    if cron:
        try:
            next(iter(CronSim(cron, datetime.now(zone))))
        except (CronSimError, StopIteration) as exc:
            raise ValidationError(
                {"heartbeat_cron": f"Not a cron expression this can follow: {exc}."}
            ) from None


def prepare(check: Check, now: datetime) -> None:
    """Give a heartbeat check its secret key, and its due time from its last ping (or from its
    creation, before the first): when it is created and whenever it is changed."""
    if check.ping_key is None:
        check.ping_key = uuid.uuid4()
    check.next_run_at = None
    check.heartbeat_due_at = due_after(check, check.last_ping_at or check.created_at or now)


def next_expected(check: Check, after: datetime) -> datetime:
    """When the next ping is expected after `after` (aware, UTC)."""
    if check.heartbeat_cron:
        zone = ZoneInfo(check.heartbeat_timezone or "UTC")
        moment = next(iter(CronSim(check.heartbeat_cron, after.astimezone(zone))))
        return moment.astimezone(UTC)
    return after + timedelta(seconds=check.heartbeat_period_seconds or 0)


def due_after(check: Check, after: datetime) -> datetime:
    return next_expected(check, after) + timedelta(seconds=check.heartbeat_grace_seconds or 0)


def ping_path(check: Check) -> str:
    return f"/ping/{check.ping_key}" if check.ping_key else ""


# --- pings -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    key: uuid.UUID | None  # None: not a well-formed key (answered like an unknown one)
    kind: str  # success | start | fail
    body: bytes  # at most EXCERPT_BYTES
    received_at: datetime
    cut: bool = False  # the body was longer than EXCERPT_BYTES


# Adds each key's pings of this batch to its count for the minute, in one round trip (a
# pipeline of INCRBY and EXPIRE per key cost as much Python as the database statement).
_COUNT_PINGS = """
local totals = {}
for i, name in ipairs(KEYS) do
  local added = tonumber(ARGV[i])
  local total = redis.call('INCRBY', name, added)
  if total == added then redis.call('EXPIRE', name, 120) end
  totals[i] = total
end
return totals
"""


def _over_limit(keys: Counter[uuid.UUID]) -> set[uuid.UUID]:
    """Ping keys whose pings this minute, these included, exceed the limit.

    Counted by key (never reused, unlike a check id in a database made again) and before the
    database is asked whether the key exists, so a key over its limit costs the database
    nothing. A guessed key is counted too: one small Redis key for two minutes."""
    limit = pings_per_minute()
    window = int(time.time() // 60)
    over: set[uuid.UUID] = set()
    if not keys:
        return over
    client = events.redis_client()
    if client is not None:
        names = [f"rc:pings:{key}:{window}" for key in keys]
        try:
            totals = client.register_script(_COUNT_PINGS)(keys=names, args=list(keys.values()))
        except redis.RedisError:
            # A limiter that is down must not lose the pings it was meant to thin out.
            return over
        return {key for key, total in zip(keys, totals, strict=True) if total > limit}
    for key, count in keys.items():
        name = f"rc:pings:{key}:{window}"
        cache.add(name, 0, 120)
        if cache.incr(name, count) > limit:
            over.add(key)
    return over


def _excerpt(body: bytes, cut: bool) -> str:
    text = body[:EXCERPT_BYTES].decode("utf-8", errors="replace")
    return text + ("\n[cut at 10 kB]" if cut else "")


def _inbox_known(pings: Sequence[Ping], over: set[uuid.UUID]) -> set[uuid.UUID]:
    """Put the pings of known keys that are not over their limit into the inbox; the known
    keys among all of them. One statement on PostgreSQL."""
    keys = sorted({p.key for p in pings if p.key is not None})
    if not keys:
        return set()
    if connection.vendor != "postgresql":
        found = dict(
            Check.objects.filter(
                ping_key__in=keys, probe=Check.Probe.HEARTBEAT, parent__isnull=True
            ).values_list("ping_key", "pk")
        )
        PingInbox.objects.bulk_create(
            PingInbox(
                health_check_id=found[p.key],
                kind=p.kind,
                body=p.body[:EXCERPT_BYTES],
                cut=p.cut,
                received_at=p.received_at,
            )
            for p in pings
            if p.key in found and p.key not in over
        )
        return set(found)
    known = [p for p in pings if p.key is not None]
    # Table names from the models; every value is a parameter.
    sql = (
        "WITH p AS (SELECT * FROM unnest("  # noqa: S608
        "%s::uuid[], %s::text[], %s::bytea[], %s::boolean[], %s::timestamptz[], %s::boolean[]) "
        "WITH ORDINALITY "
        "AS p(key, kind, body, cut, received_at, over, n)), "
        f"c AS (SELECT id, ping_key FROM {Check._meta.db_table} "
        "WHERE ping_key = ANY(%s::uuid[]) AND probe = %s AND parent_id IS NULL), "
        f"added AS (INSERT INTO {PingInbox._meta.db_table} "
        "(health_check_id, kind, body, cut, received_at) "
        "SELECT c.id, p.kind, p.body, p.cut, p.received_at FROM p JOIN c ON c.ping_key = p.key "
        "WHERE NOT p.over ORDER BY p.n) "
        "SELECT ping_key FROM c"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                [p.key for p in known],
                [p.kind for p in known],
                [p.body[:EXCERPT_BYTES] for p in known],
                [p.cut for p in known],
                [p.received_at for p in known],
                [p.key in over for p in known],
                keys,
                Check.Probe.HEARTBEAT.value,
            ],
        )
        return {row[0] for row in cursor.fetchall()}


def receive(pings: Sequence[Ping]) -> list[int]:
    """Take in a batch of pings: the HTTP status for each, in order (200, 404 or 429).

    What a ping endpoint waits for: the rate limit (one Redis round trip) and one statement
    that finds the keys and puts the accepted pings into the inbox. Recording them (results,
    rollups, states, notifications) is `drain`'s work, done after the answers are sent."""
    over = _over_limit(Counter(p.key for p in pings if p.key is not None))
    known = _inbox_known(pings, over)
    return [(RATE_LIMITED if p.key in over else OK) if p.key in known else NOT_FOUND for p in pings]


def record_pings(pings: Sequence[Ping]) -> list[int]:
    """Take in and record a batch of pings at once; the HTTP status for each, in order."""
    statuses = receive(pings)
    drain()
    return statuses


# Drains take turns (a transaction-level advisory lock), so the pings of one check are
# recorded in the order they arrived even with several web processes and beat draining.
DRAIN_LOCK = 0x5243_5049_4E47  # "RCPING"


def _take_inbox(limit: int) -> list[tuple[int, int, str, bytes, bool, datetime]]:
    """The oldest inbox rows (up to `limit`), removed from the inbox, oldest first."""
    if connection.vendor != "postgresql":
        rows = list(
            PingInbox.objects.order_by("pk").values_list(
                "pk", "health_check_id", "kind", "body", "cut", "received_at"
            )[:limit]
        )
        PingInbox.objects.filter(pk__in=[row[0] for row in rows]).delete()
        return [(r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]
    table = PingInbox._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [DRAIN_LOCK])
        cursor.execute(
            f"DELETE FROM {table} WHERE id IN "  # noqa: S608
            f"(SELECT id FROM {table} ORDER BY id LIMIT %s) "
            "RETURNING id, health_check_id, kind, body, cut, received_at",
            [limit],
        )
        rows = cursor.fetchall()
    return sorted((r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows)


def drain(limit: int = 2000) -> int:
    """Record the pings waiting in the inbox, in arrival order; how many there were."""
    total = 0
    while True:
        with transaction.atomic():
            rows = _take_inbox(limit)
            _record_rows(rows)
        total += len(rows)
        if len(rows) < limit:
            return total


def _record_rows(rows: Sequence[tuple[int, int, str, bytes, bool, datetime]]) -> None:
    from . import services

    if not rows:
        return
    checks = {c.pk: c for c in services.load_checks({row[1] for row in rows})}
    outcomes = []
    touched: dict[int, Check] = {}
    for _id, check_id, kind, body, cut, received_at in rows:
        check = checks.get(check_id)
        if check is None:
            continue
        touched[check_id] = check
        if kind == "start":
            check.heartbeat_started_at = received_at
            continue
        duration = None
        if check.heartbeat_started_at is not None and check.heartbeat_started_at <= received_at:
            duration = round((received_at - check.heartbeat_started_at).total_seconds() * 1000, 3)
        failed = kind == "fail"
        message = "the job reported a failure (/fail)"
        outcomes.append(
            services.Outcome(
                check=check,
                passed=not failed,
                status_code=None,
                latency_ms=duration,
                failures=(
                    [
                        {
                            "message": message,
                            "expected": "success",
                            "actual": "fail",
                            "assertion": None,
                        }
                    ]
                    if failed
                    else []
                ),
                error="",
                excerpt=_excerpt(body, cut),
                started_at=received_at,
            )
        )
        check.last_ping_at = received_at
        check.heartbeat_started_at = None
        check.heartbeat_due_at = due_after(check, received_at)
    services.record(outcomes, trigger=CheckResult.Trigger.PING)
    _store_ping_times(list(touched.values()))


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _store_ping_times(checks: list[Check]) -> None:
    """The pinged checks' last ping, start and due times, in one statement."""
    if not checks:
        return
    fields = ["last_ping_at", "heartbeat_started_at", "heartbeat_due_at"]
    if connection.vendor != "postgresql":
        Check.objects.bulk_update(checks, fields)
        return
    # bulk_update builds a CASE per row and field: most of a 300-ping batch's time went there.
    payload = json.dumps(
        [
            [c.pk, _iso(c.last_ping_at), _iso(c.heartbeat_started_at), _iso(c.heartbeat_due_at)]
            for c in sorted(checks, key=lambda c: c.pk)
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Check._meta.db_table} AS c SET "  # noqa: S608
            "last_ping_at = (v->>1)::timestamptz, heartbeat_started_at = (v->>2)::timestamptz, "
            "heartbeat_due_at = (v->>3)::timestamptz "
            "FROM json_array_elements(%s::json) AS v WHERE c.id = (v->>0)::bigint",
            [payload],
        )


# --- lateness ----------------------------------------------------------------------------------


def mark_late(now: datetime | None = None, limit: int = 1000) -> list[int]:
    """Fail the heartbeat checks whose due time passed without a ping; their ids."""
    from . import services

    now = now or timezone.now()
    # A ping still in the inbox counts: record it before judging who is late.
    drain()
    ids = list(
        Check.objects.filter(
            probe=Check.Probe.HEARTBEAT,
            enabled=True,
            parent__isnull=True,
            heartbeat_due_at__lte=now,
        )
        .exclude(status=Check.Status.FAILING)
        .order_by("heartbeat_due_at")
        .values_list("pk", flat=True)[:limit]
    )
    if not ids:
        return []
    outcomes = []
    for check in services.load_checks(ids):
        if check.last_ping_at is not None:
            since = f"last ping {check.last_ping_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        else:
            since = "no ping yet"
        due = check.heartbeat_due_at.astimezone(UTC)
        grace = timedelta(seconds=check.heartbeat_grace_seconds or 0)
        message = (
            f"late: expected a ping by {due - grace:%Y-%m-%d %H:%M:%S} UTC "
            f"(grace {int(grace.total_seconds())} s), {since}"
        )
        outcomes.append(
            services.Outcome(
                check=check,
                passed=False,
                status_code=None,
                latency_ms=None,
                failures=[
                    {"message": message, "expected": "a ping", "actual": None, "assertion": None}
                ],
                error=message,
                excerpt="",
                started_at=now,
            )
        )
    services.record(outcomes, trigger=CheckResult.Trigger.LATE)
    return [o.check.pk for o in outcomes]
