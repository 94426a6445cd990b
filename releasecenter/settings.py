"""Settings, all read from the environment (12-factor).

With nothing set, the app runs on the embedded defaults: a SQLite file under var/, a Celery broker
on the filesystem, and media in a local folder. Production sets DATABASE_URL (PostgreSQL),
REDIS_URL and AZURE_STORAGE_CONNECTION_STRING. See README.md for the full reference.
"""

import base64
import binascii
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("RELEASECENTER_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env(
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["localhost", "127.0.0.1", "[::1]"]),
    CSRF_TRUSTED_ORIGINS=(list, []),
    REDIS_URL=(str, ""),
    AZURE_STORAGE_CONNECTION_STRING=(str, ""),
    AZURE_STORAGE_CONTAINER=(str, "releasecenter"),
    SECURE_SSL_REDIRECT=(bool, True),
    SECURE_COOKIES=(bool, True),
    SECURE_PROXY_SSL_HEADER_ENABLED=(bool, False),
    LOG_LEVEL=(str, "INFO"),
    LOG_JSON=(bool, None),
)

DEBUG = env("DEBUG")

# --- Secrets --------------------------------------------------------------------------------------
# A missing or short key is a deployment mistake that would make sessions and signatures guessable,
# so outside DEBUG we refuse to start rather than run insecurely.
SECRET_KEY = env.str("SECRET_KEY", default="")
if not DEBUG and len(SECRET_KEY) < 50:
    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a random value of at least 50 characters when DEBUG is off "
        f"(it is {'missing' if not SECRET_KEY else f'{len(SECRET_KEY)} characters long'}). "
        "Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(64))'"
    )
if not SECRET_KEY:
    # DEBUG only: a fixed, public development key is fine for trying the app on one machine.
    SECRET_KEY = "insecure-development-key-" + "x" * 40

# Fernet key for secrets stored at rest (cluster credentials, check headers). Derived from
# SECRET_KEY when unset so the embedded default works; production should set it explicitly.
RELEASECENTER_ENCRYPTION_KEY = env.str("RELEASECENTER_ENCRYPTION_KEY", default="")
if RELEASECENTER_ENCRYPTION_KEY:
    try:
        _key_bytes = base64.urlsafe_b64decode(RELEASECENTER_ENCRYPTION_KEY.encode())
    except (binascii.Error, ValueError):
        _key_bytes = b""
    if len(_key_bytes) != 32:
        # Refuse to start rather than fail on the first secret read or written.
        raise ImproperlyConfigured(
            "RELEASECENTER_ENCRYPTION_KEY must be a Fernet key (32 url-safe base64-encoded bytes). "
            "Generate one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'"
        )

ALLOWED_HOSTS = env("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env("CSRF_TRUSTED_ORIGINS")
# Where people reach this site: links in pages sent by e-mail or webhook (acknowledge links).
RELEASECENTER_URL = env.str("RELEASECENTER_URL", default="http://127.0.0.1:8000").rstrip("/")
# Mail (pages, check notifications): SMTP when EMAIL_HOST is set; otherwise each message is
# printed to the worker's log (the console backend), which is what the demo shows.
EMAIL_HOST = env.str("EMAIL_HOST", default="")
EMAIL_PORT = env.int("EMAIL_PORT", default=587)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=True)
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
DEFAULT_FROM_EMAIL = env.str(
    "DEFAULT_FROM_EMAIL", default="Release Center <releasecenter@localhost>"
)
CSRF_FAILURE_VIEW = "releasecenter.errors.csrf_failure"

# --- Applications ---------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "csp",
    "axes",
    "releasecenter.apps.CoreConfig",
    "checklists",
    "monitoring",
    "deployments",
]

MIDDLEWARE = [
    "releasecenter.metrics.MetricsMiddleware",
    # Outside everything else, so an API client gets JSON whichever layer answered with an error.
    "releasecenter.middleware.JsonErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "releasecenter.middleware.StaticFilesMiddleware",
    "releasecenter.middleware.RequestIdMiddleware",
    "releasecenter.middleware.BadInputMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Axes last, as its documentation requires, so it sees the final authentication result.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "releasecenter.urls"
WSGI_APPLICATION = "releasecenter.wsgi.application"
ASGI_APPLICATION = "releasecenter.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "releasecenter.context_processors.navigation",
            ],
        },
    },
]

# --- Stores ---------------------------------------------------------------------------------------
VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'releasecenter.sqlite3'}")
}
SQLITE_OPTIONS = {
    "timeout": 20,
    "transaction_mode": "IMMEDIATE",
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
}
DATABASES["default"].setdefault("CONN_MAX_AGE", 0)
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Web, worker and beat share the file; wait for a lock instead of failing at once. A
    # transaction that read first and then writes cannot wait for the lock (SQLite fails it at
    # once, "database is locked", to avoid a deadlock), so transactions take the write lock when
    # they begin (IMMEDIATE). WAL lets readers go on while one of them writes.
    DATABASES["default"].setdefault("OPTIONS", {}).update(SQLITE_OPTIONS)
elif env.bool("DATABASE_POOL", default=True):
    # A psycopg connection pool per process: opening a PostgreSQL connection per request costs
    # several milliseconds, and under ASGI Django's persistent connections are not an option.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 2,
        "max_size": env.int("DATABASE_POOL_MAX", default=20),
        "timeout": 10,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL")

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "rc",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AZURE_STORAGE_CONNECTION_STRING = env("AZURE_STORAGE_CONNECTION_STRING")
MEDIA_ROOT = env.str("MEDIA_ROOT", default=str(VAR_DIR / "media"))
MEDIA_URL = "/media/"
if AZURE_STORAGE_CONNECTION_STRING:
    _default_storage = {
        "BACKEND": "storages.backends.azure_storage.AzureStorage",
        "OPTIONS": {
            "connection_string": AZURE_STORAGE_CONNECTION_STRING,
            "azure_container": env("AZURE_STORAGE_CONTAINER"),
            # Private container: downloads go through short-lived SAS URLs or access-checked views.
            "expiration_secs": 300,
            "overwrite_files": False,
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
# In DEBUG whitenoise serves straight from the source folders, so no collectstatic is needed.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- Accounts -------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "project-list"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
SESSION_SAVE_EVERY_REQUEST = False
SESSION_COOKIE_HTTPONLY = True

# Throttle password guessing: five failures for one username from one address locks it for 15 min.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

# --- Security headers -----------------------------------------------------------------------------
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if not DEBUG:
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_SSL_REDIRECT = env("SECURE_SSL_REDIRECT")
    # /health is probed over plain HTTP by load balancers and compose health checks.
    SECURE_REDIRECT_EXEMPT = [r"^health$", r"^metrics$"]
    # Off only for plain HTTP on one's own machine (scripts/demo), never behind a proxy.
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env("SECURE_COOKIES")
    if env("SECURE_PROXY_SSL_HEADER_ENABLED"):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# django-csp 4: everything from our own origin; no inline scripts or styles, no CDN.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'self'"],
        "object-src": ["'none'"],
    }
}

# --- I18N -----------------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- REST API -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "releasecenter.api_auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Ours refuses non-objects, NUL characters and deep nesting with a 400 (parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "releasecenter.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {"anon": "60/min"},
    "EXCEPTION_HANDLER": "releasecenter.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Release Center API",
    "DESCRIPTION": "Releases, checklists, deployments and health checks for CI pipelines.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a "kind"; name each choice set after its model.
    "ENUM_NAME_OVERRIDES": {
        "EnvironmentKindEnum": "releasecenter.models.Environment.Kind",
        "ChecklistTemplateKindEnum": "checklists.models.ChecklistTemplate.Kind",
        "EvidenceKindEnum": "checklists.models.Evidence.Kind",
        "DeploymentKindEnum": "deployments.models.jobs.Deployment.Kind",
        "DeploymentStepKindEnum": "deployments.models.jobs.DeploymentStep.Kind",
    },
}

# --- Celery ---------------------------------------------------------------------------------------
# Deployments run for minutes: acknowledge only after the task finished so a worker that dies
# mid-job gives the message back, hand each worker one message at a time, and keep the broker's
# visibility timeout well above the longest job so Redis does not redeliver a job still running.
LONGEST_JOB_SECONDS = env.int("LONGEST_JOB_SECONDS", default=3600)
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": LONGEST_JOB_SECONDS * 2}
else:
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Without this kombu writes its control exchange to ./control in the working directory.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
# Four queues, each with workers of its own (releasecenter/queues.py). Tests and benchmarks give
# every queue a prefix of their own so no other worker on the machine takes their jobs.
CELERY_QUEUE_PREFIX = env.str("CELERY_QUEUE_PREFIX", default="")
CELERY_TASK_DEFAULT_QUEUE = f"{CELERY_QUEUE_PREFIX}default"
# A worker started without -Q (the embedded default's single worker, a first try) takes every
# queue; production workers name theirs with -Q.
CELERY_TASK_QUEUES = tuple(
    Queue(f"{CELERY_QUEUE_PREFIX}{kind}")
    for kind in ("deployments", "checks", "notifications", "default")
)
CELERY_TASK_ROUTES = ("releasecenter.queues.route_task",)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = LONGEST_JOB_SECONDS
CELERY_TASK_TIME_LIMIT = LONGEST_JOB_SECONDS + 60
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Beat runs exactly once: only the holder of a lease in Redis schedules (releasecenter/beat.py); a
# second beat stands by and takes over within this many seconds of the first one's death.
CELERY_BEAT_SCHEDULER = "releasecenter.beat:LeasedScheduler"
BEAT_LEASE_SECONDS = env.float("BEAT_LEASE_SECONDS", default=30.0)
# The beat schedule is code: each app contributes its entries in releasecenter/schedule.py.
from releasecenter.schedule import BEAT_SCHEDULE as CELERY_BEAT_SCHEDULE  # noqa: E402, F401

# --- Health checks --------------------------------------------------------------------------------
# Raw check results are kept this long; hourly rollups for a year.
CHECK_RESULT_RETENTION_DAYS = env.int("CHECK_RESULT_RETENTION_DAYS", default=30)
HEARTBEAT_PINGS_PER_MINUTE = env.int("HEARTBEAT_PINGS_PER_MINUTE", default=60)

# --- Live events ----------------------------------------------------------------------------------
EVENTS_POLL_SECONDS = 0.5
EVENTS_HEARTBEAT_SECONDS = env.float("EVENTS_HEARTBEAT_SECONDS", default=15.0)
EVENTS_CHANNEL_PREFIX = env.str("EVENTS_CHANNEL_PREFIX", default="rc:events:")
# An open stream asks again whether its user may see the topic before sending, at most this often.
EVENTS_ACCESS_RECHECK_SECONDS = env.float("EVENTS_ACCESS_RECHECK_SECONDS", default=5.0)

# --- Logging --------------------------------------------------------------------------------------
LOG_JSON = env("LOG_JSON") if env("LOG_JSON") is not None else not DEBUG
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "releasecenter.request_context.RequestIdLogFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
        },
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_JSON else "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "axes": {"level": "WARNING"},
        # httpx logs every request at INFO: one line per health check is noise.
        "httpx": {"level": "WARNING"},
    },
}
