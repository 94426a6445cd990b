"""The embedded default (SQLite) shared by web, worker and beat: a transaction that reads and
then writes waits for another writer instead of failing with "database is locked"."""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db.backends.sqlite3.base import DatabaseWrapper


def wrapper(path, **options) -> DatabaseWrapper:  # noqa: ANN001
    return DatabaseWrapper(
        {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(path),
            "OPTIONS": options,
            "TIME_ZONE": None,
            "CONN_MAX_AGE": 0,
            "CONN_HEALTH_CHECKS": False,
            "AUTOCOMMIT": True,
            "ATOMIC_REQUESTS": False,
            "TEST": {},
            "USER": "",
            "PASSWORD": "",
            "HOST": "",
            "PORT": "",
        },
        alias="sqlite-lock-test",
    )


def begin(conn: DatabaseWrapper) -> None:
    # What transaction.atomic() does on SQLite: BEGIN (or BEGIN <transaction_mode>) at once.
    conn.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)


def read_then_write_beside_a_writer(path, options) -> str:  # noqa: ANN001
    """B writes and keeps its transaction open for a moment; meanwhile A begins, reads, then
    writes: what a worker's transaction does while the web process or beat writes."""
    setup = wrapper(path, **options)
    with setup.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS t (n integer)")
    setup.close()
    a, b = wrapper(path, **options), wrapper(path, **options)
    b.inc_thread_sharing()
    b_has_lock = threading.Event()

    def writer() -> None:
        begin(b)
        with b.cursor() as cursor:
            cursor.execute("INSERT INTO t VALUES (1)")
            b_has_lock.set()
            time.sleep(0.5)
        b.commit()
        b.set_autocommit(True)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert b_has_lock.wait(5)
        begin(a)
        with a.cursor() as cursor:
            try:
                cursor.execute("SELECT count(*) FROM t")  # a reader first...
                cursor.execute("INSERT INTO t VALUES (2)")  # ...that then writes
                a.commit()
                return "written"
            except Exception as exc:  # noqa: BLE001
                a.rollback()
                return str(exc)
    finally:
        thread.join(10)
        b.dec_thread_sharing()
        for conn in (a, b):
            conn.close()


def test_a_reader_that_then_writes_waits_for_the_other_writer(tmp_path, django_db_blocker):
    # Files of their own, not the test database: unblocked only for these connections.
    with django_db_blocker.unblock():
        outcome = read_then_write_beside_a_writer(tmp_path / "a.sqlite3", settings.SQLITE_OPTIONS)
    assert outcome == "written"


def test_without_the_settings_the_same_transaction_fails_at_once(tmp_path, django_db_blocker):
    # The failure the settings prevent (seen as a deployment's smoke step failing on SQLite).
    with django_db_blocker.unblock():
        outcome = read_then_write_beside_a_writer(tmp_path / "b.sqlite3", {"timeout": 20})
    assert "locked" in outcome
