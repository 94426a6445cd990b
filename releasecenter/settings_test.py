"""Settings for the test suite: real PostgreSQL and Redis on 127.0.0.1 unless told otherwise.

The environment wins, so CI or a developer can point the suite elsewhere with DATABASE_URL and
REDIS_URL. Tests never fall back to SQLite or an in-process broker on their own.
"""

import os

os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-" + "k" * 48)
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/releasecenter")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("LOG_JSON", "0")
# Concurrency tests run 20 threads in the test process beside its own connection; each thread
# holds a pooled connection while it works, so the pool needs room for all of them.
os.environ.setdefault("DATABASE_POOL_MAX", "40")
# One queue per test run: a worker the suite starts takes only this run's jobs.
os.environ.setdefault("CELERY_QUEUE", f"test-{os.getpid()}")
os.environ.setdefault(
    "RELEASECENTER_VAR_DIR", os.path.join(os.path.dirname(__file__), "..", "var", "test")
)

from .settings import *  # noqa: E402,F403
from .settings import STORAGES  # noqa: E402

# Tests see plain static files; no manifest is built.
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
WHITENOISE_USE_FINDERS = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
