"""Settings for Oversight: every value comes from the environment.

With nothing set, Oversight runs on one machine on embedded defaults: a SQLite
file under ``var/``, and (under ``make run``) a private Redis server. Setting
``DATABASE_URL`` and ``REDIS_URL`` makes it distributed. The README lists each
variable with its default.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import dj_database_url

from oversight.env import ConfigError, env_bool, env_float, env_int, env_list, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("OVERSIGHT_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
PRODUCTION = env_bool("OVERSIGHT_PRODUCTION", False)


def _secret_key() -> str:
    """SECRET_KEY from the environment; for local runs, one generated once and kept in var/."""
    key = env_str("SECRET_KEY")
    if key:
        return key
    if PRODUCTION:
        raise ConfigError("SECRET_KEY must be set when OVERSIGHT_PRODUCTION is on.")
    path = VAR_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(50)
        path.write_text(key)
        path.chmod(0o600)
        return key


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
PORT = env_int("PORT", 8000, minimum=1, maximum=65535)
SITE_URL = env_str("SITE_URL", f"http://127.0.0.1:{PORT}").rstrip("/")
# The Ed25519 key (PEM) that signs decision receipts; empty: a key kept in the database.
OVERSIGHT_SIGNING_KEY = env_str("OVERSIGHT_SIGNING_KEY", "") or ""

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "oversight",
    "monitoring",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "oversight.csrf.CsrfMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "oversight.audit.AddressMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "oversight.textinput.RefuseNulMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # A page that finds the database unreachable answers 503 + Retry-After, not 500.
    "oversight.unavailable.DatabaseUnavailableMiddleware",
]

# The agent API, /healthz and /metrics are served by a second Django handler with
# this short list: they use no sessions, cookies or CSRF, and every middleware
# costs a thread hop under ASGI (see oversight/asgi.py).
API_MIDDLEWARE: list[str] = []

ROOT_URLCONF = "oversight.urls"
ASGI_APPLICATION = "oversight.asgi.application"

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
                "oversight.context_processors.roles",
                "oversight.context_processors.local_logins",
            ],
        },
    },
]


# --- Database ------------------------------------------------------------------

DATABASE_URL = env_url(
    "DATABASE_URL",
    f"sqlite:///{VAR_DIR / 'oversight.sqlite3'}",
    schemes=("sqlite", "postgres", "postgresql", "pgsql"),
)


def _database(url: str) -> dict:
    config = dj_database_url.parse(url)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        Path(config["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        # WAL lets the web process and the workers read while one writes;
        # IMMEDIATE takes the write lock at BEGIN so two writers queue on the busy
        # timeout instead of failing with "database is locked" on upgrade.
        config["OPTIONS"] = {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        # A file, not memory: the test suite's server processes share it. Each test
        # run names its own (tests/embedded_redis.py) so parallel runs don't collide.
        config["TEST"] = {"NAME": env_str("OVERSIGHT_TEST_SQLITE", str(VAR_DIR / "test_oversight.sqlite3"))}
    else:
        # Django's own pool: under ASGI a fresh connection per request was several
        # times slower than a pooled one.
        config["CONN_MAX_AGE"] = 0
        # A pooled connection is checked before it is handed out, so the first request
        # after the database comes back does not meet a connection that died with it.
        config["CONN_HEALTH_CHECKS"] = True
        config["OPTIONS"] = {
            # A new connection gives up after this long (an unreachable host).
            "connect_timeout": 2,
            # Lets the submission's two statements be prepared on the server
            # (oversight.prepared); Django's cursors bind on the client and never prepare.
            # DATABASE_PREPARE=0 for a connection pooler that cannot keep them (PgBouncer
            # before 1.21 in transaction mode): they are then sent unprepared.
            "prepare_threshold": 5 if env_bool("DATABASE_PREPARE", True) else None,
            "pool": {
                "min_size": env_int("DATABASE_POOL_MIN", 2, minimum=0),
                "max_size": env_int("DATABASE_POOL_MAX", 20, minimum=1),
                # How long a request waits for a connection: with the database down it
                # then answers 503 + Retry-After within 2 s, never a hang.
                "timeout": env_float("DATABASE_POOL_TIMEOUT", 1.2, minimum=0.1, maximum=60),
                # A failed connection attempt is retried with a doubling backoff for
                # this long, then dropped; the next request starts a fresh attempt at
                # once. Short, so the first request after the database is back is
                # served at once rather than after a backoff grown to many seconds.
                "reconnect_timeout": env_float("DATABASE_RECONNECT_TIMEOUT", 2.0, minimum=0.5),
            }
        }
    return config


DATABASES = {"default": _database(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _local_logins_hint() -> str:
    """Where `make run` keeps the generated passwords, for the login page; empty
    (no hint) in production or on a shared database."""
    if PRODUCTION or not DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        return ""
    path = VAR_DIR / "local-logins.txt"
    return str(path.relative_to(BASE_DIR)) if path.is_relative_to(BASE_DIR) else str(path)


LOCAL_LOGINS_HINT = _local_logins_hint()


# --- Redis: broker, channel layer, cache ---------------------------------------

REDIS_URL = env_url("REDIS_URL", None, schemes=("redis", "rediss", "unix"))
# How long any Redis client (cache, channel layer, broker) waits to connect and for an
# answer. A Redis that hangs (stopped, not dead: the kernel still accepts connections)
# then costs a request this long per call, not an open-ended wait; the request path
# carries on from the database as with Redis down.
REDIS_TIMEOUT = env_float("REDIS_TIMEOUT", 0.5, minimum=0.05, maximum=30)
_REDIS_TIMEOUTS = {"socket_connect_timeout": REDIS_TIMEOUT, "socket_timeout": REDIS_TIMEOUT}

if REDIS_URL:
    # The pub/sub layer: a group_send is one PUBLISH, and each process fans it out to
    # its own sockets. The list-based core layer pushes one message per socket through
    # Redis, which fell behind with hundreds of browsers and a busy agent API.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, **_REDIS_TIMEOUTS}],
                "prefix": env_str("CHANNEL_PREFIX", "oversight"),
            },
        }
    }
    # Same Redis database as the broker: its clear() deletes only keys under its
    # prefix, never FLUSHDB (oversight/cache.py).
    CACHES = {
        "default": {
            "BACKEND": "oversight.cache.PrefixedRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "oversight",
            "OPTIONS": dict(_REDIS_TIMEOUTS),
        }
    }
else:
    # No Redis: one process only (management commands, a shell). `make run`
    # always starts a private Redis server and sets REDIS_URL for its children.
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


# --- Celery --------------------------------------------------------------------

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = REDIS_URL or None
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Publishing gives up after REDIS_TIMEOUT (the delivery's row waits in the outbox for
# the sweep); consuming is not affected: the worker reads only when Redis has data.
CELERY_BROKER_CONNECTION_TIMEOUT = REDIS_TIMEOUT
CELERY_BROKER_TRANSPORT_OPTIONS = dict(_REDIS_TIMEOUTS)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")


# --- Auth, sessions, security ----------------------------------------------------

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", PRODUCTION)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
CSRF_FAILURE_VIEW = "oversight.views.csrf_failure"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# HTTPS only in production: browsers remember it for a year; pages redirect to
# https (the agent API, /healthz and /metrics are served without this middleware,
# so a load balancer's plain-HTTP health check still answers).
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
SILENCED_SYSTEM_CHECKS = [
    # HSTS preload is a commitment of the whole domain to a browser-shipped list: the
    # operator's decision (SECURE_HSTS_PRELOAD=1), not a default of this service.
    "security.W021",
    # The check looks for Django's CsrfViewMiddleware by name; ours is a subclass
    # (oversight/csrf.py), which tests/oversight/test_security_headers.py asserts.
    "security.W003",
]

# Content-Security-Policy (django-csp): scripts only from this site's static files,
# never inline (templates have no inline scripts or on* handlers; a test keeps it so).
# Inline styles stay allowed: templates use a few style attributes, and CSS runs no code.
# connect-src 'self' covers the feed's ws:/wss: to this host.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# The API enforces its own 256 KiB limit with a JSON error; Django's limit sits
# just above it so the API's check is the one that answers.
DATA_UPLOAD_MAX_MEMORY_SIZE = 512 * 1024


# --- I18N, static files -----------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve straight from the app and project folders: no collectstatic step for
# local runs; the Docker image runs collectstatic and WhiteNoise serves STATIC_ROOT.
WHITENOISE_USE_FINDERS = True

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "oversight@localhost")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = 10


# --- Oversight ---------------------------------------------------------------------

# Per-agent API rate limit: requests per minute.
OVERSIGHT_RATE_LIMIT_PER_MINUTE = env_int("OVERSIGHT_RATE_LIMIT_PER_MINUTE", 6000, minimum=1)
# How often the beat applies due timeouts and escalations (seconds).
OVERSIGHT_SWEEP_SECONDS = env_float("OVERSIGHT_SWEEP_SECONDS", 1.0, minimum=0.1)
# The beat process's deadline loop (oversight/deadlines.py): sleeps until the next
# due time and applies it, from the database alone. A new earlier deadline wakes it
# through Redis; the longest it sleeps between looks is POLL without Redis (or while
# Redis is down) and IDLE with it (a backstop for a lost wake-up).
OVERSIGHT_DEADLINE_LOOP = env_bool("OVERSIGHT_DEADLINE_LOOP", True)
OVERSIGHT_DEADLINE_POLL_SECONDS = env_float("OVERSIGHT_DEADLINE_POLL_SECONDS", 0.25, minimum=0.01, maximum=10)
OVERSIGHT_DEADLINE_IDLE_SECONDS = env_float("OVERSIGHT_DEADLINE_IDLE_SECONDS", 30.0, minimum=0.01, maximum=600)
# Callbacks: the total time a delivery is retried for, and an optional allow-list
# of hosts (comma separated; empty = any http(s) address).
OVERSIGHT_CALLBACK_MAX_SECONDS = env_int("OVERSIGHT_CALLBACK_MAX_SECONDS", 3600, minimum=1)
OVERSIGHT_CALLBACK_ALLOWED_HOSTS = env_list("OVERSIGHT_CALLBACK_ALLOWED_HOSTS", [])
OVERSIGHT_CALLBACK_TIMEOUT = env_float("OVERSIGHT_CALLBACK_TIMEOUT", 5.0, minimum=0.1)
# Deliveries (callbacks and notifications): how long a worker holds a claimed delivery
# before another may retry it (a killed worker's delivery is retried after this).
OVERSIGHT_DELIVERY_LEASE_SECONDS = env_float("OVERSIGHT_DELIVERY_LEASE_SECONDS", 60.0, minimum=1.0)
# Notifications: the key of generic webhooks' signatures, the Apprise schemes accepted,
# and whether critical memory alerts and leak suspects are sent too.
OVERSIGHT_WEBHOOK_SECRET = env_str("OVERSIGHT_WEBHOOK_SECRET", "")
OVERSIGHT_NOTIFY_SCHEMES = env_list("OVERSIGHT_NOTIFY_SCHEMES", ["mailto", "slack", "msteams", "discord", "ntfy"])
OVERSIGHT_NOTIFY_MONITORING = env_bool("OVERSIGHT_NOTIFY_MONITORING", False)
# Send routine approvals by the policy to the live feed as `request.decided` (the
# contract); turn off where hundreds of browsers watch a busy API.
OVERSIGHT_FEED_POLICY_DECISIONS = env_bool("OVERSIGHT_FEED_POLICY_DECISIONS", True)
# How often the live feed re-checks that each socket's person is still signed in,
# active and in a role (a socket that lost them closes with 4401/4403).
OVERSIGHT_FEED_RECHECK_SECONDS = env_float("OVERSIGHT_FEED_RECHECK_SECONDS", 2.0, minimum=0.1, maximum=5.0)
# One-tap approve / reject links in notifications to people (spec §9.7).
OVERSIGHT_DECISION_LINKS = env_bool("OVERSIGHT_DECISION_LINKS", False)
# Events waiting for one slow browser before it is sent a fresh snapshot instead.
OVERSIGHT_FEED_SOCKET_BACKLOG = env_int("OVERSIGHT_FEED_SOCKET_BACKLOG", 1000)
# bench/api.py's baseline endpoint (/api/bench/insert); never on in production.
OVERSIGHT_BENCH = env_bool("OVERSIGHT_BENCH", False)
# /metrics: open by default; a token, when set, is required as a bearer token.
OVERSIGHT_METRICS_TOKEN = env_str("OVERSIGHT_METRICS_TOKEN")

# Monitoring.
MONITORING_SAMPLE_SECONDS = env_float("MONITORING_SAMPLE_SECONDS", 5.0, minimum=0.5)
MONITORING_TOP_PROCESSES = env_int("MONITORING_TOP_PROCESSES", 20, minimum=0, maximum=500)
MONITORING_RAW_RETENTION_DAYS = env_int("MONITORING_RAW_RETENTION_DAYS", 7, minimum=1)
MONITORING_ROLLUP_RETENTION_DAYS = env_int("MONITORING_ROLLUP_RETENTION_DAYS", 90, minimum=1)
MONITORING_WARNING_RAISE = env_float("MONITORING_WARNING_RAISE", 80.0, minimum=0, maximum=100)
MONITORING_WARNING_CLEAR = env_float("MONITORING_WARNING_CLEAR", 75.0, minimum=0, maximum=100)
MONITORING_CRITICAL_RAISE = env_float("MONITORING_CRITICAL_RAISE", 90.0, minimum=0, maximum=100)
MONITORING_CRITICAL_CLEAR = env_float("MONITORING_CRITICAL_CLEAR", 85.0, minimum=0, maximum=100)
MONITORING_ALERT_FOR_SECONDS = env_float("MONITORING_ALERT_FOR_SECONDS", 30.0, minimum=0)
MONITORING_HOST_PRESSURE_MAX_AGE = env_float("MONITORING_HOST_PRESSURE_MAX_AGE", 60.0, minimum=1)
# Leak detection (monitoring/detector.py): judged at every scan over fixed windows of
# sample time: a slope over SPAN minutes with z >= Z_SLOPE, or STREAK consecutive
# WINDOW-minute windows each with z >= Z_STREAK; guards against plateaus, steps, falls
# and no new high over HISTORY minutes; a rate above both floors.
MONITORING_LEAK_SPAN_MINUTES = env_int("MONITORING_LEAK_SPAN_MINUTES", 60, minimum=15, maximum=24 * 60)
MONITORING_LEAK_WINDOW_MINUTES = env_int("MONITORING_LEAK_WINDOW_MINUTES", 15, minimum=6)
MONITORING_LEAK_STREAK = env_int("MONITORING_LEAK_STREAK", 3, minimum=1, maximum=12)
MONITORING_LEAK_Z_SLOPE = env_float("MONITORING_LEAK_Z_SLOPE", 3.0, minimum=1)
MONITORING_LEAK_Z_STREAK = env_float("MONITORING_LEAK_Z_STREAK", 4.0, minimum=1)
MONITORING_LEAK_HISTORY_MINUTES = env_int("MONITORING_LEAK_HISTORY_MINUTES", 60, minimum=0)
MONITORING_LEAK_MIN_SLOPE_BYTES_PER_HOUR = env_float("MONITORING_LEAK_MIN_SLOPE_BYTES_PER_HOUR", 3145728.0, minimum=0)
MONITORING_LEAK_MIN_GROWTH_PERCENT_PER_HOUR = env_float("MONITORING_LEAK_MIN_GROWTH_PERCENT_PER_HOUR", 0.5, minimum=0)
# The workers' top-process samples feed the same detector (hosts without the SDK).
MONITORING_LEAK_HOST_PROCESSES = env_bool("MONITORING_LEAK_HOST_PROCESSES", True)
# A sample that arrives later than this after its `at` is stored and scanned for leaks
# but never raises a pressure alert nor feeds a policy.
MONITORING_LATE_SAMPLE_SECONDS = env_float("MONITORING_LATE_SAMPLE_SECONDS", 300.0, minimum=0)
MONITORING_LEAK_SCAN_SECONDS = env_float("MONITORING_LEAK_SCAN_SECONDS", 300.0, minimum=1)
# How often the beat rolls samples up into minutes and prunes old rows.
MONITORING_ROLLUP_SECONDS = env_float("MONITORING_ROLLUP_SECONDS", 60.0, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    # Decision links' tokens never reach a log line (Django logs the path of a 4xx);
    # expected 4xx answers (a refused page, a bad Host header) are one line, no traceback.
    "filters": {
        "redact_link_tokens": {"()": "oversight.logfilters.RedactLinkTokens"},
        "one_line_4xx": {"()": "oversight.logfilters.OneLineClientErrors"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["one_line_4xx", "redact_link_tokens"]}
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "django.request": {"filters": ["one_line_4xx"]},
        # One line per task run (the sweep runs every second) drowns everything else.
        "celery.app.trace": {"level": "WARNING"},
        "celery.worker.strategy": {"level": "WARNING"},
        "celery.beat": {"level": "WARNING"},
    },
}
