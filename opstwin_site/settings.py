"""Django settings for OpsTwin.

Everything deployment-specific comes from the environment (see ``opstwin_site/env.py`` and the
README's table). Unset service URLs select the embedded default: an embedded PostgreSQL from
the ``pgserver`` package, the in-memory channel layer, Celery in eager mode, and telemetry fed
straight to the ingest service instead of through an MQTT broker.
"""

from __future__ import annotations

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from opstwin_site.env import env_bool, env_float, env_int, env_str, env_url

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

INSTALLED_APPS = [
    "daphne",
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
    "channels",
    "twins",
    "telemetry",
    "simulation",
    "aiw",
    "policy",  # last: its post_migrate hook needs every other app's permissions
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
_db["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 60, minimum=0)
DATABASES = {"default": _db}
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
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "aiw.problems.problem_exception_handler",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "OpsTwin API",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
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
    },
}

CELERY_BEAT_SCHEDULE: dict = {}

# --- issue 3: telemetry storage, rollups and queries -----------------------------------------

# --- issue 4: detection and the anomaly lifecycle --------------------------------------------

# --- issue 5: AIW protocol (tokens, idempotency, rate limits, streams) -----------------------

# --- issue 6: policy, approvals, execution and audit -----------------------------------------

# --- issue 7: simulation engine and jobs -----------------------------------------------------
