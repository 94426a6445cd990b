"""A Celery worker process freezes what it holds at start, so its collections skip it."""

from __future__ import annotations

import gc

from celery.signals import worker_process_init

import releasecenter.celery  # noqa: F401 - connects the worker signal


def test_a_worker_process_freezes_its_startup_objects_when_it_starts():
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        # What Celery sends in every pool process it starts.
        worker_process_init.send(sender=None)
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
