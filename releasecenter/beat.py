"""Beat runs exactly once: a scheduler that sends tasks only while it holds a lease in Redis.

Two beats (a second one started by mistake, or a Kubernetes rollout that briefly overlaps the old
pod with the new one) would each send every periodic task, and the recurring checklists, the
reaper and the SLA timers would all run twice. So every beat process competes for one key in
Redis, ``SET key token NX PX lease``: the holder renews it on each tick (at least every third of
the lease) and schedules; the others tick idle and try again. A holder that dies (kill -9, a lost
node) stops renewing, and a standby takes over once the lease ran out: at most
``BEAT_LEASE_SECONDS`` without a scheduler, never two at once.

Renewal is compare-and-set (only the token's owner may extend or delete the key), so a holder
that stalled past its lease finds out on its next tick and stands down instead of scheduling
beside the new holder. While Redis is unreachable no beat schedules; nothing could be sent anyway,
since Redis is the broker.

Without Redis (the embedded default: one machine, a filesystem broker) there is nothing to share
a lease through; the Procfile starts one beat and that is the guarantee.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time

import redis
from celery.beat import PersistentScheduler
from django.conf import settings

logger = logging.getLogger(__name__)

# Extend the lease only if we still own it; delete it only if we own it.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def lease_key() -> str:
    return f"{settings.CELERY_QUEUE_PREFIX}releasecenter:beat-lease"


class BeatLease:
    """One process's claim on the beat lease."""

    def __init__(self, client: redis.Redis, key: str, seconds: float) -> None:
        self.client = client
        self.key = key
        self.seconds = seconds
        self.token = f"{socket.gethostname()}:{secrets.token_hex(8)}"
        self.held = False
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def hold(self) -> bool:
        """Take the lease or extend it; whether this process may schedule now."""
        ms = int(self.seconds * 1000)
        try:
            if self.held:
                held = bool(self._renew(keys=[self.key], args=[self.token, ms]))
            else:
                held = bool(self.client.set(self.key, self.token, nx=True, px=ms))
        except redis.RedisError as exc:
            if self.held:
                logger.warning("beat lease: Redis unreachable, standing down: %s", exc)
            held = False
        if held != self.held:
            if held:
                logger.warning("beat lease taken by %s: this beat schedules", self.token)
            else:
                logger.warning("beat lease lost by %s: this beat stands by", self.token)
        self.held = held
        return held

    def release(self) -> None:
        if not self.held:
            return
        try:
            self._release(keys=[self.key], args=[self.token])
        except redis.RedisError:
            pass  # the lease runs out on its own
        self.held = False


class LeasedScheduler(PersistentScheduler):
    """Celery's file-backed scheduler, sending only while this process holds the beat lease."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        self.lease: BeatLease | None = None
        if settings.REDIS_URL:
            client = redis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
            )
            self.lease = BeatLease(client, lease_key(), settings.BEAT_LEASE_SECONDS)
        super().__init__(*args, **kwargs)

    def _renew_every(self) -> float:
        return self.lease.seconds / 3 if self.lease else self.max_interval

    def tick(self, *args, **kwargs) -> float:  # noqa: ANN002, ANN003
        if self.lease is not None and not self.lease.hold():
            # Stand by; try again well before a dead holder's lease would run out.
            return self._renew_every()
        started = time.monotonic()
        interval = super().tick(*args, **kwargs)
        if self.lease is not None and time.monotonic() - started > self.lease.seconds:
            logger.warning("beat tick outlasted the lease; renewal decides who schedules next")
        return min(interval, self._renew_every())

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.lease is not None:
                self.lease.release()
