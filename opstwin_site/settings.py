"""Django settings for OpsTwin.

Everything deployment-specific comes from the environment (see ``opstwin_site/env.py`` and the
README's table). Unset service URLs select the embedded default: an embedded PostgreSQL from
the ``pgserver`` package, the in-memory channel layer, Celery in eager mode, and telemetry fed
straight to the ingest service instead of through an MQTT broker.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from twins.env import env_bool, env_float, env_int, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("OPSTWIN_DATA_DIR", str(BASE_DIR / ".opstwin")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if SECRET_KEY is None:
    if env_bool("OPSTWIN_PRODUCTION", False):
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) must be set in production")
    # Development/demo only: a per-checkout key, so sessions survive restarts of the demo.
    _key_file = DATA_DIR / "secret_key"
    if not _key_file.exists():
        import secrets

        DATA_DIR.mkdir(parents=True, exist_ok=True)
        _key_file.write_text(secrets.token_urlsafe(50))
    SECRET_KEY = _key_file.read_text().strip()

ALLOWED_HOSTS = (env_str("ALLOWED_HOSTS") or "localhost,127.0.0.1,[::1],testserver").split(",")
CSRF_TRUSTED_ORIGINS = [o for o in (env_str("CSRF_TRUSTED_ORIGINS") or "").split(",") if o]
# The public base URL (https://ops.example.com) of absolute URLs the API hands out (schema $ids,
# manifest links); unset: built from each request's Host and scheme.
PUBLIC_URL = (env_url("PUBLIC_URL", ("http", "https")) or "").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "axes",
    "channels",
    "twins",
    "telemetry",
    "simulation",
    "aiw",
    "policy",  # last domain app: its post_migrate hook needs every other app's permissions
    "demo",  # the top layer: SKAB/NAB replay and the simulated plant (manage.py demo)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a lockout into its 429 answer
]

ROOT_URLCONF = "opstwin_site.urls"
ASGI_APPLICATION = "opstwin_site.asgi.application"
WSGI_APPLICATION = None

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
            ],
        },
    },
]

# --- Database: PostgreSQL only --------------------------------------------------------------
DATABASE_URL = env_url("DATABASE_URL", ("postgres", "postgresql", "timescale"))
if DATABASE_URL is None:
    from opstwin_site.embedded import embedded_database_url

    DATABASE_URL = embedded_database_url(DATA_DIR)
    EMBEDDED_DATABASE = True
else:
    EMBEDDED_DATABASE = False
_db = environ.Env.db_url_config(DATABASE_URL.replace("timescale://", "postgres://", 1))
_db["ENGINE"] = "django.db.backends.postgresql"
# Connections are bounded per process by psycopg's pool (Django 5.1+): a thread takes a
# connection for the span of one request or task and hands it back, so a web process never
# holds more than DB_POOL_MAX_SIZE connections however many clients or executor threads it
# serves; past that, requests wait up to DB_POOL_TIMEOUT seconds for one. Persistent
# per-thread connections (CONN_MAX_AGE > 0) grew with the ASGI thread count instead (97 of
# PostgreSQL's 100 for one daphne process under 8 clients). DB_POOL_MAX_SIZE=0 turns the pool
# off (per-request connections, CONN_MAX_AGE=DB_CONN_MAX_AGE).
# application_name tells the processes apart in pg_stat_activity.
_db.setdefault("OPTIONS", {})["application_name"] = env_str("DB_APPLICATION_NAME", "opstwin")
# Server-side prepared statements for the ledger's lock, tip read and INSERT (twins.ledger),
# which run under the sequencing lock; Django's own queries are never prepared. Turn off
# behind a pooler in transaction mode that cannot keep them (PgBouncer before 1.22).
DB_PREPARED_STATEMENTS = env_bool("DB_PREPARED_STATEMENTS", True)
DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 8, minimum=0)
if DB_POOL_MAX_SIZE:
    _db["CONN_MAX_AGE"] = 0  # the pool keeps connections; Django must hand them back
    _db.setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(env_int("DB_POOL_MIN_SIZE", 1, minimum=0), DB_POOL_MAX_SIZE),
        "max_size": DB_POOL_MAX_SIZE,
        "timeout": env_float("DB_POOL_TIMEOUT", 10.0),
    }
else:
    _db["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 0, minimum=0)
DATABASES = {"default": _db}
# A streaming read replica for the telemetry query API (telemetry/replica.py): same user
# options and pool bounds as the primary. In a test run it mirrors the primary.
DATABASE_REPLICA_URL = env_url("DATABASE_REPLICA_URL", ("postgres", "postgresql"))
if DATABASE_REPLICA_URL:
    _replica = environ.Env.db_url_config(DATABASE_REPLICA_URL)
    _replica["ENGINE"] = _db["ENGINE"]
    _replica["CONN_MAX_AGE"] = _db["CONN_MAX_AGE"]
    _replica["OPTIONS"] = {**_db["OPTIONS"], **_replica.get("OPTIONS", {})}
    _replica["TEST"] = {"MIRROR": "default"}
    DATABASES["replica"] = _replica
DATABASE_ROUTERS = ["telemetry.replica.TelemetryReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# TimescaleDB: off by default because the extension is not on every PostgreSQL. When on, the
# telemetry migration turns the samples table into a hypertable (see telemetry/storage.py).
TIMESCALEDB = env_bool("TIMESCALEDB", False)

# --- Redis, channels, celery ----------------------------------------------------------------
REDIS_URL = env_url("REDIS_URL", ("redis", "rediss", "unix"))
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", REDIS_URL is None)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ROUTES = {
    "telemetry.tasks.*": {"queue": "detect"},
    "simulation.tasks.*": {"queue": "simulate"},
    "policy.tasks.*": {"queue": "actions"},
}
CELERY_TASK_DEFAULT_QUEUE = "default"

# --- MQTT -------------------------------------------------------------------------------------
MQTT_URL = env_url("MQTT_URL", ("mqtt", "mqtts", "tcp"))
MQTT_TOPIC_PREFIX = env_str("MQTT_TOPIC_PREFIX", "opstwin")
MQTT_COMMAND_ACK_TIMEOUT = env_float("MQTT_COMMAND_ACK_TIMEOUT", 5.0)
INGEST_BATCH_SIZE = env_int("INGEST_BATCH_SIZE", 500, minimum=1)
INGEST_BATCH_SECONDS = env_float("INGEST_BATCH_SECONDS", 0.25)
INGEST_MAX_BODY_BYTES = env_int("INGEST_MAX_BODY_BYTES", 5 * 1024 * 1024, minimum=1024)
INGEST_MAX_FUTURE_SECONDS = env_int("INGEST_MAX_FUTURE_SECONDS", 300, minimum=0)

# --- Detection, simulation, policy ----------------------------------------------------------
# Rolling z-score (seed spec): window of prior points, |z| >= 3, score = min(1, |z|/5).
DETECTION_WINDOW = env_int("DETECTION_WINDOW", 60, minimum=3)
DETECTION_Z_THRESHOLD = env_float("DETECTION_Z_THRESHOLD", 3.0)
# Flagged points closer than this (seconds) belong to one episode.
DETECTION_EPISODE_GAP_SECONDS = env_int("DETECTION_EPISODE_GAP_SECONDS", 30, minimum=0)
SIMULATION_SAMPLES = env_int("SIMULATION_SAMPLES", 10_000, minimum=100)
SIMULATION_CALIBRATION_WINDOW = env_int("SIMULATION_CALIBRATION_WINDOW", 300, minimum=10)
# Rows of normal operation a what-if model is fitted on (SKAB convention: the first 400).
SIMULATION_FIT_ROWS = env_int("SIMULATION_FIT_ROWS", 400, minimum=10)
POLICY_AUTO_EXECUTE_AT = env_float("POLICY_AUTO_EXECUTE_AT", 0.90)
POLICY_APPROVAL_AT = env_float("POLICY_APPROVAL_AT", 0.70)

# --- Auth, API --------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses locked-out callers before any check
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None
# Password guessing (django-axes): after AXES_FAILURE_LIMIT failed logins for one username, or
# from one client address, that username / address is refused (429) for AXES_COOLOFF_MINUTES,
# on the login form and Django admin alike. Per username means an attacker can lock a person
# out for the cool-off; that is the price of stopping a distributed guess at one password.
# Behind a proxy, set AXES_IPWARE_META_PRECEDENCE_ORDER to trust X-Forwarded-For.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("AXES_COOLOFF_MINUTES", 15.0))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Agents use bearer tokens (aiw.authentication, prepended below), people their
        # session. No HTTP Basic: it would put people's passwords in scripts,
        # on every request, beyond the login form's lockout and two-factor reach.
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "twins.problems.problem_exception_handler",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    # Overflowing numbers and over-deep nesting in JSON are 400s, not 500s
    # (opstwin_site/parsers.py).
    # JSON only (issue 13 item 3): a form body cannot say null, and the OpenAPI names none.
    "DEFAULT_PARSER_CLASSES": ["opstwin_site.parsers.StrictJSONParser"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "OpsTwin API",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {"AssetKindEnum": "twins.choices.AssetKind"},
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve app and sidecar assets straight from their folders: no collectstatic step for the demo.
WHITENOISE_USE_FINDERS = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "qiskit": {"level": "WARNING"},
        "stevedore": {"level": "WARNING"},
        "amqtt": {"level": "WARNING"},
        "transitions": {"level": "WARNING"},
        "axes": {"level": "WARNING"},  # a lockout is logged as a warning; each failure is not
    },
}

CELERY_BEAT_SCHEDULE: dict = {}

# --- issue 3: telemetry storage, rollups and queries -----------------------------------------
# Storage (telemetry/storage.py): TimescaleDB policies, applied by migration 0004 or by
# `manage.py telemetry_storage --apply-policies`. Retention counts event time, in days.
TELEMETRY_RETENTION_DAYS = env_int("TELEMETRY_RETENTION_DAYS", 3650, minimum=8)
TELEMETRY_COMPRESS_AFTER_DAYS = env_int("TELEMETRY_COMPRESS_AFTER_DAYS", 7, minimum=1)
# Plain PostgreSQL: how often Celery beat folds dirty ranges into the rollups (seconds).
TELEMETRY_ROLLUP_REFRESH_SECONDS = env_int("TELEMETRY_ROLLUP_REFRESH_SECONDS", 30, minimum=1)
CELERY_BEAT_SCHEDULE["refresh-rollups"] = {
    "task": "telemetry.rollup_tasks.refresh_rollups",
    "schedule": float(TELEMETRY_ROLLUP_REFRESH_SECONDS),
    "options": {"expires": float(TELEMETRY_ROLLUP_REFRESH_SECONDS)},
}
# Query limits (telemetry/queries.py): ranges in days, sizes in rows or points.
TELEMETRY_QUERY_MAX_RANGE_DAYS = env_int("TELEMETRY_QUERY_MAX_RANGE_DAYS", 31, minimum=1)
TELEMETRY_QUERY_MAX_LIMIT = env_int("TELEMETRY_QUERY_MAX_LIMIT", 10_000, minimum=1)
TELEMETRY_AGGREGATE_MAX_RANGE_DAYS = env_int("TELEMETRY_AGGREGATE_MAX_RANGE_DAYS", 400, minimum=1)
TELEMETRY_AGGREGATE_MAX_POINTS = env_int("TELEMETRY_AGGREGATE_MAX_POINTS", 200_000, minimum=100)
# Aggregates over ranges at least this long (seconds) read the rollups when they can.
TELEMETRY_ROLLUP_AFTER_SECONDS = env_int("TELEMETRY_ROLLUP_AFTER_SECONDS", 6 * 3600, minimum=0)
# Ingest subscriber: how long the broker keeps a named (--client-id) session while the process
# is down (MQTT v5 Session Expiry Interval, seconds), and where each process writes its status.
INGEST_SESSION_EXPIRY_SECONDS = env_int("INGEST_SESSION_EXPIRY_SECONDS", 7 * 86400, minimum=0)
INGEST_STATUS_DIR = Path(env_str("INGEST_STATUS_DIR", str(DATA_DIR / "ingest")))

# --- issue 4: detection and the anomaly lifecycle --------------------------------------------
ANOMALY_ESCALATE_AFTER_SECONDS = env_int("ANOMALY_ESCALATE_AFTER_SECONDS", 300, minimum=1)
CELERY_BEAT_SCHEDULE["escalate-anomalies"] = {
    "task": "telemetry.tasks.escalate_anomalies", "schedule": 60.0,
}

# --- issue 5: AIW protocol (tokens, idempotency, rate limits, streams) -----------------------
# Agents authenticate with bearer tokens (first, so anonymous calls get 401 + WWW-Authenticate).
REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] = [
    "aiw.authentication.AgentTokenAuthentication",
    *REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"],
]
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = ["aiw.throttling.AgentTokenThrottle"]
MIDDLEWARE.insert(0, "twins.problems.ProblemMiddleware")  # outermost: even DisallowedHost → problem
MIDDLEWARE.append("aiw.idempotency.IdempotencyMiddleware")
# Rate-limit counters must be shared by every web process: Redis when there is one.
CACHES = {
    **globals().get("CACHES", {"default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}),
    "aiw": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
            "KEY_PREFIX": "opstwin"} if REDIS_URL else
           {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "aiw"},
}
if REDIS_URL:
    # redis-py >= 6 reads with a 5 s socket timeout by default, exactly channels-redis's 5 s
    # BZPOPMIN block: an idle receive then raises TimeoutError and kills its consumer.
    CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [
        {"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}]
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"] = [
    "drf_spectacular.hooks.postprocess_schema_enums",
    "aiw.openapi.add_streams_and_problems",
]
AIW_TOKEN_RATE = env_str("AIW_TOKEN_RATE", "600/min")  # per token unless the token sets its own
import re  # noqa: E402 - kept inside this block

if not re.fullmatch(r"\d+/[smhd]\w*", AIW_TOKEN_RATE):
    raise ImproperlyConfigured(f"AIW_TOKEN_RATE={AIW_TOKEN_RATE!r} is not like '600/min'")
AIW_SSE_HEARTBEAT_SECONDS = env_float("AIW_SSE_HEARTBEAT_SECONDS", 15.0)
AIW_STREAM_QUEUE_MAX = env_int("AIW_STREAM_QUEUE_MAX", 2000, minimum=1)  # events per stream
AIW_MAX_STREAMS_PER_CALLER = env_int("AIW_MAX_STREAMS_PER_CALLER", 20, minimum=1)  # per process
AIW_HUB_POLL_SECONDS = env_float("AIW_HUB_POLL_SECONDS", 1.0)  # safety net for lost NOTIFYs
# The hub reads the feed at most this often; events committed meanwhile reach each stream in
# one write (aiw/hub.py). Lower: less lag, more wake-ups per stream.
AIW_STREAM_FLUSH_SECONDS = env_float("AIW_STREAM_FLUSH_SECONDS", 0.025)
AIW_SCOPE_REFRESH_SECONDS = env_float("AIW_SCOPE_REFRESH_SECONDS", 30.0)
AIW_IDEMPOTENCY_TTL_HOURS = env_int("AIW_IDEMPOTENCY_TTL_HOURS", 24, minimum=1)
AIW_IDEMPOTENCY_LOCK_SECONDS = env_int("AIW_IDEMPOTENCY_LOCK_SECONDS", 60, minimum=1)
AIW_FEED_RETENTION_DAYS = env_int("AIW_FEED_RETENTION_DAYS", 0, minimum=0)  # 0 = keep forever
CELERY_BEAT_SCHEDULE["aiw-prune-feed"] = {"task": "aiw.tasks.prune_feed", "schedule": 3600.0}
CELERY_BEAT_SCHEDULE["aiw-purge-idempotency-keys"] = {
    "task": "aiw.tasks.purge_idempotency_keys", "schedule": 3600.0}

# --- issue 6: policy, approvals, execution and audit -----------------------------------------
def _policy_public_keys(raw: str | None) -> dict[str, str]:
    """``POLICY_PUBLIC_KEYS`` = ``key_id:base64,key_id2:base64`` (32 raw Ed25519 bytes each)."""
    import base64
    import binascii

    keys = {}
    for item in filter(None, (raw or "").split(",")):
        key_id, _, b64 = item.strip().partition(":")
        try:
            valid = len(base64.b64decode(b64, validate=True)) == 32
        except (binascii.Error, ValueError):
            valid = False
        if not key_id or not valid:
            raise ImproperlyConfigured(f"POLICY_PUBLIC_KEYS: {item.strip()[:24]!r} is not "
                                       "key_id:<base64 of a 32-byte Ed25519 public key>")
        keys[key_id] = b64
    return keys


# Public keys that policy signatures are verified against (never keys stored with a policy).
POLICY_PUBLIC_KEYS = _policy_public_keys(env_str("POLICY_PUBLIC_KEYS"))
# Development/demo only: with no keys configured and OPSTWIN_PRODUCTION off, the public keys in
# this folder (the demo writes its generated key pair here) are pinned as well. In production
# this is None: without POLICY_PUBLIC_KEYS no policy verifies and all automation is denied.
POLICY_DEV_KEY_DIR = (
    None if POLICY_PUBLIC_KEYS or env_bool("OPSTWIN_PRODUCTION", False)
    else DATA_DIR / "policy-keys"
)
# Seconds to wait for the asset's acknowledgement of a command (after the broker's PUBACK).
POLICY_COMMAND_EFFECT_TIMEOUT = env_float("POLICY_COMMAND_EFFECT_TIMEOUT", 10.0)
# Audit anchors are also appended here ("off": table only; the table is always written).
POLICY_AUDIT_ANCHOR_FILE = env_str("POLICY_AUDIT_ANCHOR_FILE",
                                   str(DATA_DIR / "audit-anchors.jsonl"))
POLICY_AUDIT_ANCHOR_FILE = "" if POLICY_AUDIT_ANCHOR_FILE == "off" else POLICY_AUDIT_ANCHOR_FILE
# The audit chain's HMAC-SHA256 key (issue 10): a secret kept outside the database, so SQL
# access alone cannot forge entries. Required in production; elsewhere a per-checkout key file.
AUDIT_HMAC_KEY = env_str("AUDIT_HMAC_KEY")
if AUDIT_HMAC_KEY is None:
    if env_bool("OPSTWIN_PRODUCTION", False):
        raise ImproperlyConfigured("AUDIT_HMAC_KEY (or AUDIT_HMAC_KEY_FILE) must be set in "
                                   "production")
    _audit_key_file = DATA_DIR / "audit_hmac_key"
    if not _audit_key_file.exists():
        import secrets

        DATA_DIR.mkdir(parents=True, exist_ok=True)
        _audit_key_file.touch(mode=0o600)
        _audit_key_file.write_text(secrets.token_urlsafe(32))
    AUDIT_HMAC_KEY = _audit_key_file.read_text().strip()
if len(AUDIT_HMAC_KEY) < 32:
    raise ImproperlyConfigured("AUDIT_HMAC_KEY must be at least 32 characters")
CELERY_BEAT_SCHEDULE["policy-expire-proposals"] = {
    "task": "policy.tasks.expire_proposals", "schedule": 30.0}
CELERY_BEAT_SCHEDULE["policy-verify-executions"] = {
    "task": "policy.tasks.verify_executions", "schedule": 10.0}
# --- issue 14: the twin model ------------------------------------------------------------------
# Reported state and liveness (twins/state.py): an asset is silent after this many sampling
# intervals without a reading (server clock); asset.state events are coalesced to at most one
# per asset per ASSET_STATE_MIN_INTERVAL_SECONDS, at most ASSET_STATE_PUBLISH_LIMIT per pass.
ASSET_SILENT_AFTER_INTERVALS = env_float("ASSET_SILENT_AFTER_INTERVALS", 5.0)
ASSET_STATE_MIN_INTERVAL_SECONDS = env_float("ASSET_STATE_MIN_INTERVAL_SECONDS", 1.0)
ASSET_STATE_PUBLISH_LIMIT = env_int("ASSET_STATE_PUBLISH_LIMIT", 2000, minimum=1)
CELERY_BEAT_SCHEDULE["twins-publish-asset-states"] = {
    "task": "twins.tasks.publish_asset_states", "schedule": ASSET_STATE_MIN_INTERVAL_SECONDS,
    "options": {"expires": ASSET_STATE_MIN_INTERVAL_SECONDS}}
CELERY_BEAT_SCHEDULE["policy-anchor-audit"] = {
    "task": "twins.tasks.anchor_audit", "schedule": 300.0}
# Commands left in flight by a dead process: re-sent under their command id once their lease
# lapses, failed after POLICY_COMMAND_MAX_ATTEMPTS attempts (policy/services/attempts.py).
POLICY_COMMAND_MAX_ATTEMPTS = env_int("POLICY_COMMAND_MAX_ATTEMPTS", 3, minimum=1)
CELERY_BEAT_SCHEDULE["policy-recover-commands"] = {
    "task": "policy.tasks.recover_commands",
    "schedule": env_float("POLICY_RECOVER_SECONDS", 10.0)}
# Notifications (issue 15, policy/notifications.py): e-mail through EMAIL_BACKEND and signed
# webhooks. A failed send is retried after BACKOFF * 2**n seconds (capped at BACKOFF_MAX), at
# most MAX_RETRIES times, then recorded as failed (and audited). Links are PUBLIC_URL + path.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "opstwin@localhost")
NOTIFY_WEBHOOK_TIMEOUT_SECONDS = env_float("NOTIFY_WEBHOOK_TIMEOUT_SECONDS", 10.0)
NOTIFY_MAX_RETRIES = env_int("NOTIFY_MAX_RETRIES", 5, minimum=0)
NOTIFY_BACKOFF_SECONDS = env_float("NOTIFY_BACKOFF_SECONDS", 30.0)
NOTIFY_BACKOFF_MAX_SECONDS = env_float("NOTIFY_BACKOFF_MAX_SECONDS", 3600.0)
# Webhook hosts allowed although they resolve to private/loopback/link-local/reserved addresses
# (comma-separated: host names, *.subdomain wildcards, IP addresses, CIDR networks; empty: public
# addresses only). Checked on save and at every send (policy/webhooks.py).
NOTIFICATION_WEBHOOK_ALLOWED_HOSTS = [
    h.strip() for h in (env_str("NOTIFICATION_WEBHOOK_ALLOWED_HOSTS") or "").split(",")
    if h.strip()]
# Deliveries never tried this long after they were made (their queueing failed) are queued again.
NOTIFY_REQUEUE_AFTER_SECONDS = env_float("NOTIFY_REQUEUE_AFTER_SECONDS", 600.0)
CELERY_BEAT_SCHEDULE["policy-requeue-notifications"] = {
    "task": "policy.tasks.requeue_unsent_notifications", "schedule": 300.0}
# Fault injection for the recovery tests only: "after_claim" / "after_send" makes a process
# SIGKILL itself at that point of a command's first attempt.
POLICY_FAULT_POINT = env_str("POLICY_FAULT_POINT", "") or ""
if POLICY_FAULT_POINT not in ("", "after_claim", "after_send"):
    raise ImproperlyConfigured("POLICY_FAULT_POINT must be after_claim, after_send or empty")


# --- issue 7: simulation engine and jobs -----------------------------------------------------
# POST /sim/run answers inline (200) when the routed engine is Monte Carlo, the first batch is at
# most SIMULATION_SYNC_MAX_SAMPLES and the convergence loop is capped at SIMULATION_SYNC_MAX_TOTAL
# (the engine's default max_samples); anything larger, and every quantum run, is a Celery job
# (202). No request may ask for more than SIMULATION_MAX_SAMPLES samples (memory bound).
SIMULATION_SYNC_MAX_SAMPLES = env_int("SIMULATION_SYNC_MAX_SAMPLES", 20_000, minimum=2)
SIMULATION_SYNC_MAX_TOTAL = env_int("SIMULATION_SYNC_MAX_TOTAL", 160_000, minimum=2)
SIMULATION_MAX_SAMPLES = env_int("SIMULATION_MAX_SAMPLES", 2_000_000, minimum=1000)
# Cost bounds (simulation/services/prepare.py): inline only when the estimated wall time is at
# most SIMULATION_SYNC_MAX_SECONDS (scipy distributions and quantum runs: never inline); a
# queued run is stopped and failed after SIMULATION_MAX_SECONDS; at most SIMULATION_MAX_INPUTS
# inputs per request.
SIMULATION_SYNC_MAX_SECONDS = env_float("SIMULATION_SYNC_MAX_SECONDS", 0.5)
SIMULATION_MAX_SECONDS = env_float("SIMULATION_MAX_SECONDS", 600.0)
SIMULATION_MAX_INPUTS = env_int("SIMULATION_MAX_INPUTS", 200, minimum=1)
# A running job writes its progress to its row, and reads its cancel flag, at most this often
# (seconds; 0 = at every engine callback).
SIMULATION_PROGRESS_SECONDS = env_float("SIMULATION_PROGRESS_SECONDS", 0.5)
SIMULATION_CANCEL_POLL_SECONDS = env_float("SIMULATION_CANCEL_POLL_SECONDS", 0.5)
# A run left "running" by a dead worker is restarted once its lease (SIMULATION_MAX_SECONDS
# + 60 s) has passed: beat requeues it, and a redelivered task may reclaim it
# (simulation/services/runs.py).
CELERY_BEAT_SCHEDULE["simulation-requeue-stalled"] = {
    "task": "simulation.tasks.requeue_stalled_runs", "schedule": 60.0}
# Redis transport: a message taken by a worker that died unacked (acks_late) is redelivered
# after this many seconds. It must exceed the longest task (a simulation's hard limit,
# SIMULATION_MAX_SECONDS + 30 s), or a running task is delivered a second time.
CELERY_VISIBILITY_TIMEOUT_SECONDS = env_int("CELERY_VISIBILITY_TIMEOUT_SECONDS", 3600, minimum=1)
if CELERY_VISIBILITY_TIMEOUT_SECONDS <= SIMULATION_MAX_SECONDS + 30:
    raise ImproperlyConfigured("CELERY_VISIBILITY_TIMEOUT_SECONDS must exceed "
                               "SIMULATION_MAX_SECONDS + 30 (the longest task)")
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT_SECONDS}


# --- issue 17: production and security (HTTPS, cookies, hosts, CSP, probes, metrics) ----------
# OPSTWIN_PRODUCTION=1 (the Docker image's default) turns every HTTPS-only switch on; each can
# still be set on its own. `manage.py check --deploy` passes with these production defaults
# (tests/test_deploy.py runs it). TLS terminates at a reverse proxy in front of uvicorn.
OPSTWIN_PRODUCTION = env_bool("OPSTWIN_PRODUCTION", False)
if OPSTWIN_PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG must be off with OPSTWIN_PRODUCTION=1")
if OPSTWIN_PRODUCTION and env_str("ALLOWED_HOSTS") is None:
    raise ImproperlyConfigured("ALLOWED_HOSTS (host names, comma-separated) must be set in "
                               "production")
ALLOWED_HOSTS = [host.strip() for host in ALLOWED_HOSTS if host.strip()]
CSRF_TRUSTED_ORIGINS = [origin.strip() for origin in CSRF_TRUSTED_ORIGINS if origin.strip()]
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", OPSTWIN_PRODUCTION)
# Health probes and the metrics scraper talk plain HTTP inside the private network.
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$", r"^metrics$"]
# The header a TLS-terminating proxy sets to "https" (e.g. X-Forwarded-Proto). Only trustworthy
# when the proxy always sets or strips it, hence off unless named.
if _proxy_ssl_header := env_str("SECURE_PROXY_SSL_HEADER"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if OPSTWIN_PRODUCTION else 0,
                              minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", OPSTWIN_PRODUCTION)
# The preload directive only states consent; a domain enters browsers' lists when submitted.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", OPSTWIN_PRODUCTION)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", OPSTWIN_PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", OPSTWIN_PRODUCTION)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy (django-csp 4): same-origin scripts, plus inline scripts that carry
# the request's nonce (<script nonce="{{ request.csp_nonce }}">); inline styles are allowed
# (the Swagger page and a few style attributes use them), plugins and framing are not.
from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE  # noqa: E402 - this block only

INSTALLED_APPS.append("csp")
MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
                  "csp.middleware.CSPMiddleware")
_csp_directives = {
    "default-src": [SELF],
    "script-src": [SELF, NONCE],
    "style-src": [SELF, UNSAFE_INLINE],
    "img-src": [SELF, "data:"],
    "font-src": [SELF, "data:"],
    "connect-src": [SELF],
    "object-src": [NONE],
    "base-uri": [SELF],
    "form-action": [SELF],
    "frame-ancestors": [NONE],
}
# (django-csp reads no CSP_* names itself any more: they stay local to this block.)
if _csp_report_uri := env_str("CSP_REPORT_URI"):
    _csp_directives["report-uri"] = [_csp_report_uri]
if env_bool("CSP_REPORT_ONLY", False):
    CONTENT_SECURITY_POLICY_REPORT_ONLY = {"DIRECTIVES": _csp_directives}
    CONTENT_SECURITY_POLICY = None
else:
    CONTENT_SECURITY_POLICY = {"DIRECTIVES": _csp_directives}

# Probes (opstwin_site/health.py): /ready's bounds on the ingest subscribers' status files, and
# its per-dependency timeout (seconds).
READY_INGEST_MIN_SUBSCRIBERS = env_int("READY_INGEST_MIN_SUBSCRIBERS", 0, minimum=0)
READY_INGEST_MAX_LAG_SECONDS = env_float("READY_INGEST_MAX_LAG_SECONDS", 30.0)
READY_TIMEOUT_SECONDS = env_float("READY_TIMEOUT_SECONDS", 3.0)
# Metrics (opstwin_site/metrics.py): a bearer token for /metrics (None: open), and
# prometheus-client's multiprocess folder (also read by the library itself at import).
METRICS_TOKEN = env_str("METRICS_TOKEN")
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR")
# Outermost: every response is counted and timed, problem responses included.
MIDDLEWARE.insert(0, "opstwin_site.metrics.RequestMetricsMiddleware")
# Structured logs (opstwin_site/request_log.py): every record carries the request id (also
# returned as X-Request-ID and carried into Celery tasks); LOG_FORMAT=json writes one JSON
# object per line (the default in production), plain the classic line.
LOG_FORMAT = env_str("LOG_FORMAT", "json" if OPSTWIN_PRODUCTION else "plain")
if LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r} must be json or plain")
LOGGING["filters"] = {**LOGGING.get("filters", {}),
                      "request_id": {"()": "opstwin_site.request_log.RequestIdFilter"}}
LOGGING["formatters"]["json"] = {"()": "opstwin_site.request_log.JsonFormatter"}
LOGGING["handlers"]["console"]["filters"] = ["request_id"]
LOGGING["handlers"]["console"]["formatter"] = LOG_FORMAT
MIDDLEWARE.insert(0, "opstwin_site.request_log.RequestIdMiddleware")  # outermost: ids for all
# A view that fails because PostgreSQL, Redis or the Celery broker is unreachable answers 503
# problem+json with Retry-After and the dependency's name (opstwin_site/unavailable.py).
MIDDLEWARE.append("opstwin_site.unavailable.DependencyUnavailableMiddleware")

# Optional OpenTelemetry tracing (opstwin_site/tracing.py): off by default. The OTLP endpoint,
# headers and sampler come from the SDK's own OTEL_* variables.
TRACING_ENABLED = env_bool("TRACING_ENABLED", False)
TRACING_EXPORTER = env_str("TRACING_EXPORTER", "otlp")
if TRACING_EXPORTER not in {"otlp", "console"}:
    raise ImproperlyConfigured(f"TRACING_EXPORTER={TRACING_EXPORTER!r} must be otlp or console")
TRACING_SERVICE_NAME = env_str("TRACING_SERVICE_NAME", "opstwin")
