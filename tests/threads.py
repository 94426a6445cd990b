"""Run test work in threads that start together, and never hang the suite doing it.

A thread that fails before the starting line aborts the barrier, so the others stop waiting at
once instead of until pytest-timeout ends the whole test; every thread returns its database
connection to the pool, or the next test would find the pool empty.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import connection


def run_together(
    count: int, work: Callable[[int, threading.Barrier], Any], timeout: float = 120
) -> list:
    """Call work(index, barrier) in `count` threads; re-raise the first failure.

    `work` calls barrier.wait() at the point where the threads should collide.
    """
    barrier = threading.Barrier(count, timeout=timeout)
    results: list = [None] * count
    errors: list[BaseException] = []

    def target(index: int) -> None:
        try:
            results[index] = work(index, barrier)
        except threading.BrokenBarrierError as exc:
            errors.append(exc)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread below
            errors.append(exc)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    alive = sum(thread.is_alive() for thread in threads)
    if alive:
        raise AssertionError(f"{alive} of {count} threads still running after {timeout}s")
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if real or errors:
        raise (real or errors)[0]
    return results
