"""All settings, from the environment. Nothing is required: a bare start uses SQLite and
in-process cache/channels under IFLOW2API_HOME (default ~/.iflow2api)."""

from __future__ import annotations

import os
import secrets
import time
from datetime import timedelta
from pathlib import Path

import dj_database_url

from iflow2api_site.hosts import ServedHosts

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def secret_file(path: Path, make: callable) -> str:  # type: ignore[valid-type]
    """Read a generated secret, creating it (mode 0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it a moment ago
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(make())
    for _ in range(50):  # the other process may still be writing it
        value = path.read_text().strip()
        if value:
            return value
        time.sleep(0.02)
    raise RuntimeError(f"{path} is empty")


def private_sqlite_database(name: object) -> None:
    """The database holds the encrypted secrets: owner-only (0600) from its first byte, and an
    older, readable one is made private. SQLite gives its -journal, -wal and -shm files the
    database file's mode."""
    if not name or str(name) == ":memory:" or str(name).startswith("file:"):
        return
    path = Path(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # an empty file is a database
        for suffix in ("", "-journal", "-wal", "-shm"):
            sidecar = path.with_name(path.name + suffix)
            if sidecar.exists():
                os.chmod(sidecar, 0o600)
    except OSError:
        pass  # not ours to change (a read-only or foreign-owned file): SQLite will say more


HOME_DIR = Path(env_str("IFLOW2API_HOME") or Path.home() / ".iflow2api").expanduser()
HOME_DIR.mkdir(parents=True, exist_ok=True)
os.chmod(HOME_DIR, 0o700)

SECRET_KEY = env_str("DJANGO_SECRET_KEY") or secret_file(
    HOME_DIR / "secret_key", lambda: secrets.token_urlsafe(50)
)
DEBUG = env_bool("DJANGO_DEBUG")
# The names the Django pages answer to: loopback, the instances' addresses, PUBLIC_BASE_URL's
# host, and these (`*`: any). Instances on 0.0.0.0 need their LAN/DNS names listed (hosts.py).
ALLOWED_HOSTS = ServedHosts(env_list("ALLOWED_HOSTS"), env_str("PUBLIC_BASE_URL"))
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    # The admin with its index in the order a user needs it (iflow2api_site/admin_site.py).
    "iflow2api_site.admin_site.GatewayAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "ninja",
    "django_celery_beat",
    "iflow2api_site.admin_site.AxesConfig",  # django-axes, its name translated
    "accounts",
    "instances",
    "proxy",
    "desktop",  # the tray and autostart (and their commands), above the apps
    "iflow2api_site",  # the top: its `serve` command runs the ASGI application
]

# The admin's middleware. The API paths are served by a handler without middleware
# (iflow2api_site/asgi.py): under ASGI each sync middleware costs two thread hops per request.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The admin's language: the switcher's cookie, else the browser's Accept-Language.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last (admin login lockout; settings at the end)
]

ROOT_URLCONF = "iflow2api_site.urls"
ASGI_APPLICATION = "iflow2api_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # iflow2api_site/templates (shipped): admin/base_site.html, which an app listed after
        # django.contrib.admin could not override (language switcher, remembered theme).
        "DIRS": [BASE_DIR / "templates", Path(__file__).resolve().parent / "templates"],
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

DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    # Health checks: a pooled connection the database dropped (a restart, an idle timeout) is
    # replaced when taken (psycopg_pool's check), not failing one query per dead connection.
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0,
                                                  conn_health_checks=True)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Threads that keep a connection between jobs (the sync thread of the ORM calls, the
        # request log's writer and its catch-up thread) plus the ones that borrow one (snapshot
        # reloads, account workers): psycopg_pool's default of 4 leaves little for requests.
        pool_size = max(int(env_float("DATABASE_POOL_SIZE", 10)), 4)
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = env_bool("DATABASE_POOL", True) \
            and {"min_size": 2, "max_size": pool_size,
                 # How long a query waits for a connection, then fails (API: 503). psycopg_pool's
                 # 30 s held requests that long when the database was down.
                 "timeout": max(env_float("DATABASE_POOL_TIMEOUT", 5.0), 0.1)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": HOME_DIR / "db.sqlite3",
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    private_sqlite_database(DATABASES["default"]["NAME"])
    # Persistent connections: a thread's connection is kept between jobs (broken ones are
    # still dropped). Opening one costs ~1 ms of CPU (Django registers its SQL functions, the
    # pragmas below run), which the snapshots' checks paid three times a second.
    DATABASES["default"]["CONN_MAX_AGE"] = None
    # Write-ahead log: readers never wait for a writer, and with synchronous=NORMAL a commit
    # costs no fsync (a power cut may lose the last commits, never the file's consistency): a
    # request-log batch commits ~25 times faster than in the rollback-journal default.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL")

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    CELERY_BROKER_URL = REDIS_URL
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CELERY_BROKER_URL = "memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
# Our catalogues. Listed here (not only found in each app) so that they win over the other
# apps' translations of the same words ("Name", "Enabled"…: django-celery-beat has its own).
LOCALE_PATHS = [Path(__file__).resolve().parent / "locale",
                *(BASE_DIR / package / "locale"
                  for package in ("accounts", "instances", "proxy", "desktop"))]
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = HOME_DIR / "static"
# Project-wide static overrides, present in a checkout (apps ship their own static files).
STATICFILES_DIRS = [path for path in [BASE_DIR / "static"] if path.is_dir()]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


# Secrets at rest: Fernet keys, comma separated, newest first (rotation: prepend a new key).
FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEY")
FIELD_ENCRYPTION_KEY_FILE = HOME_DIR / "field_encryption.key"

# --- logs and metrics -------------------------------------------------------------------------
# LOG_FORMAT: "plain" (time level logger [request id] message) or "json" (one object a line, for
# log shippers). Both carry the request id (iflow2api_lib/logs.py) and mask secrets.
LOG_FORMAT = env_str("LOG_FORMAT", "plain").lower()
if LOG_FORMAT not in {"plain", "json"}:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}")
# One line per HTTP request (method, path without query, status, duration); false keeps only
# the 5xx lines.
ACCESS_LOG = env_bool("ACCESS_LOG", True)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "iflow2api_lib.logs.RequestIdFilter"}},
    "formatters": {
        "plain": {"()": "iflow2api_lib.logs.PlainFormatter"},
        "json": {"()": "iflow2api_lib.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "iflow2api_lib.logs.LoopBatchedStreamHandler",
                             "formatter": LOG_FORMAT,
                             "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
        # INFO lines, DEBUG for /health and /metrics, WARNING for 5xx; NOTSET: LOG_LEVEL decides.
        "iflow2api.access": {"level": "NOTSET" if ACCESS_LOG else "WARNING"},
    },
}
# GET /metrics in the Prometheus text format (proxy/metrics.py): 404 unless enabled. With a
# token, scrapers must send `Authorization: Bearer <token>`.
METRICS_ENABLED = env_bool("METRICS_ENABLED")
METRICS_TOKEN = env_str("METRICS_TOKEN")

# --- the gateway ------------------------------------------------------------------------------
IFLOW2API = {
    # OpenAI chat: False merges reasoning_content into content; True keeps it as its own field.
    "PRESERVE_REASONING_CONTENT": env_bool("PRESERVE_REASONING_CONTENT"),
    # Client keys accepted by the API (comma separated); empty = no key needed (loopback only).
    "API_KEYS": env_list("IFLOW2API_API_KEYS"),
    # SSE keep-alive while the upstream is silent, and how long a stream may wait for the
    # upstream's first event before our headers go out (after that, errors are in-band).
    "KEEPALIVE_SECONDS": env_float("KEEPALIVE_SECONDS", 15.0),
    "STREAM_PRELUDE_SECONDS": env_float("STREAM_PRELUDE_SECONDS", 1.0),
    "UPSTREAM_CONNECT_TIMEOUT": env_float("UPSTREAM_CONNECT_TIMEOUT", 10.0),
    # Non-streaming answers and the gap between stream events (reasoning models think long).
    "UPSTREAM_READ_TIMEOUT": env_float("UPSTREAM_READ_TIMEOUT", 600.0),
    "UPSTREAM_PROXY": env_str("UPSTREAM_PROXY") or None,
    "IMPORT_IFLOW_SETTINGS": env_bool("IMPORT_IFLOW_SETTINGS", True),
    "IFLOW_SETTINGS_DIR": Path(env_str("IFLOW_SETTINGS_DIR") or Path.home() / ".iflow"),
    # Anthropic clients: unknown names (claude-*, …) map to a real model by tier.
    "DEFAULT_MODEL": env_str("DEFAULT_MODEL", "glm-5"),
    "CLAUDE_TIERS": {
        "opus": env_str("CLAUDE_OPUS_MODEL") or env_str("DEFAULT_MODEL", "glm-5"),
        "sonnet": env_str("CLAUDE_SONNET_MODEL") or env_str("DEFAULT_MODEL", "glm-5"),
        "haiku": env_str("CLAUDE_HAIKU_MODEL") or env_str("DEFAULT_MODEL", "glm-5"),
    },
    # Extra ids listed by /v1/models so Claude Code's gateway model discovery finds them.
    "CLAUDE_MODEL_ALIASES": env_list(
        "CLAUDE_MODEL_ALIASES",
        "claude-opus-4-8,claude-opus-4-7,claude-opus-4-6,claude-sonnet-5,claude-sonnet-4-6,"
        "claude-sonnet-4-5,claude-haiku-4-5",
    ),
    # max_tokens ceiling for models whose output limit the catalogue does not know (imported
    # with UPSTREAM_MODELS, addaccount --models, model sync without one): Claude Code asks for
    # 32000, which a small local model spends minutes on. 0: no ceiling.
    "DEFAULT_MAX_OUTPUT_TOKENS": max(int(env_float("DEFAULT_MAX_OUTPUT_TOKENS", 8192)), 0),
    # count_tokens: the local estimate learns each model's ratio to the upstream's own count
    # from the prompt_tokens of real requests (proxy/calibration.py); false: plain estimate.
    "TOKEN_CALIBRATION": env_bool("TOKEN_CALIBRATION", True),
    # Images for a model without vision: "route" to VISION_MODEL, or "reject" with a 400.
    "VISION_MODEL": env_str("VISION_MODEL", "qwen-vl-max"),
    "VISION_FALLBACK": env_str("VISION_FALLBACK", "route"),
    "IMAGE_MAX_BYTES": int(env_float("IMAGE_MAX_BYTES", 10 * 1024 * 1024)),
    "IMAGE_FETCH_TIMEOUT": env_float("IMAGE_FETCH_TIMEOUT", 10.0),
    # Image URLs fetched (in parallel) per request for iFlow; more is a 400.
    "IMAGE_MAX_URLS": int(env_float("IMAGE_MAX_URLS", 8)),
    # Fetching image URLs that resolve to private/loopback/link-local addresses (SSRF guard).
    "IMAGE_ALLOW_PRIVATE_URLS": env_bool("IMAGE_ALLOW_PRIVATE_URLS"),
    # Browser clients on other origins: "*" (no credentials) or a comma-separated list. Unset:
    # instances with client keys allow any origin, those without only loopback pages (cors.py).
    "CORS_ALLOWED_ORIGINS": env_list("CORS_ALLOWED_ORIGINS"),
    # Serve the hot API routes on a lean ASGI path instead of Django's handler (proxy/fastpath.py).
    "FAST_PATH": env_bool("FAST_PATH", True),
    # Work one request body may cause (proxy/bodies.py); beyond, a 400 naming the setting.
    # MAX_JSON_NODES is estimated before parsing from the body's `{`, `[` and `"` bytes.
    "MAX_JSON_NODES": int(env_float("MAX_JSON_NODES", 500_000)),
    "MAX_JSON_DEPTH": int(env_float("MAX_JSON_DEPTH", 100)),
    "MAX_REQUEST_MESSAGES": int(env_float("MAX_REQUEST_MESSAGES", 10_000)),
    "MAX_REQUEST_CONTENT_BLOCKS": int(env_float("MAX_REQUEST_CONTENT_BLOCKS", 50_000)),
    "MAX_REQUEST_TOOLS": int(env_float("MAX_REQUEST_TOOLS", 1_000)),
    # Stored Responses API answers (previous_response_id, GET /v1/responses/{id}) are kept
    # this long, then deleted by the cleanup task (proxy/tasks.py); 0: never kept.
    "RESPONSES_RETENTION_DAYS": max(env_float("RESPONSES_RETENTION_DAYS", 30.0), 0.0),
    # --- accounts: logins, refresh, pool ---
    # Where browsers reach this server (OAuth callback); defaults to the serve address.
    "PUBLIC_BASE_URL": env_str("PUBLIC_BASE_URL"),
    "IFLOW_OAUTH_BASE_URL": env_str("IFLOW_OAUTH_BASE_URL", "https://iflow.cn"),
    "IFLOW_PLATFORM_BASE_URL": env_str("IFLOW_PLATFORM_BASE_URL", "https://platform.iflow.cn"),
    "IFLOW_OAUTH_CLIENT_ID": env_str("IFLOW_OAUTH_CLIENT_ID", "10009311001"),
    # iflow-cli's public OAuth client (not a secret of ours: it ships in the CLI).
    "IFLOW_OAUTH_CLIENT_SECRET": env_str(
        "IFLOW_OAUTH_CLIENT_SECRET", "4Z3YjXycVsQvyGF1etiNlIBB4RsqSDtW"),
    "REFRESH_OAUTH_BEFORE_HOURS": env_float("REFRESH_OAUTH_BEFORE_HOURS", 24.0),
    "REFRESH_COOKIE_BEFORE_HOURS": env_float("REFRESH_COOKIE_BEFORE_HOURS", 48.0),
    "REFRESH_CHECK_SECONDS": env_float("REFRESH_CHECK_SECONDS", 300.0),
    "POOL_QUEUE_TIMEOUT": env_float("POOL_QUEUE_TIMEOUT", 30.0),
    "POOL_QUEUE_MAX": int(env_float("POOL_QUEUE_MAX", 200)),
    # How long a conversation stays pinned to its account after its last request (the
    # vendors' prompt caches are per account; docs/costs.md). 0: no pinning.
    "AFFINITY_TTL_SECONDS": env_float("AFFINITY_TTL_SECONDS", 3600.0),
    "RATE_LIMIT_COOLDOWN_SECONDS": env_float("RATE_LIMIT_COOLDOWN_SECONDS", 60.0),
    "AUTH_COOLDOWN_SECONDS": env_float("AUTH_COOLDOWN_SECONDS", 300.0),
    # SIGTERM: requests in flight may finish for this long, then open streams get an error.
    "SHUTDOWN_GRACE_SECONDS": env_float("SHUTDOWN_GRACE_SECONDS", 30.0),
    "HOST": env_str("IFLOW2API_HOST", "127.0.0.1"),
    "PORT": int(env_str("IFLOW2API_PORT", "28000")),
    # --- the listeners (iflow2api_site/server.py) ---
    # Connections the kernel queues while the server is busy accepting (capped by somaxconn);
    # Twisted's 50 made bursts of clients wait for SYN retransmits.
    "LISTEN_BACKLOG": int(env_float("LISTEN_BACKLOG", 2048)),
    # Largest request body (bodies carry base64 images); beyond: 413 before the body is read.
    "MAX_BODY_BYTES": int(env_float("MAX_BODY_BYTES", 32 * 1024 * 1024)),
    # Slow clients: the request line and headers must arrive within HEADER_TIMEOUT of their
    # first byte, the body within BODY_TIMEOUT of the headers' end (408 and closed after
    # that); a connection with no request in progress is closed after KEEPALIVE_TIMEOUT.
    # Responses (long streams) are not timed by these.
    "HEADER_TIMEOUT": env_float("HEADER_TIMEOUT", 30.0),
    "BODY_TIMEOUT": env_float("BODY_TIMEOUT", 120.0),
    "KEEPALIVE_TIMEOUT": env_float("KEEPALIVE_TIMEOUT", 30.0),
}
# Django's own body limit (the admin; the API with FAST_PATH off) is the listeners' one.
DATA_UPLOAD_MAX_MEMORY_SIZE = FILE_UPLOAD_MAX_MEMORY_SIZE = IFLOW2API["MAX_BODY_BYTES"]


# --- admin hardening: login lockout (django-axes), cookies, HTTPS ------------------------------
# Lockout after repeated failed admin logins, keyed by username + client IP. Unlock early with
# `iflow2api axes_reset_username <name>` or in the admin (Axes › Access attempts).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses locked-out logins
    *globals().get("AUTHENTICATION_BACKENDS", ["django.contrib.auth.backends.ModelBackend"]),
]
AXES_FAILURE_LIMIT = int(env_float("AXES_FAILURE_LIMIT", 5))
# A lockout always ends by itself (at least a second): a permanent one would lock the real
# admin out until someone runs axes_reset.
AXES_COOLOFF_TIME = timedelta(minutes=max(env_float("AXES_COOLOFF_MINUTES", 15), 1 / 60))
# Counted from the last failure: attempts during the lockout (the real admin retrying with the
# right password) do not restart it.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "iflow2api_site.lockout.lockout_response"  # says when it ends
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
LOGGING["loggers"]["axes"] = {"level": "WARNING"}  # failures and lockouts, not every login

# Behind a TLS-terminating reverse proxy (nginx, Caddy, a PaaS router): trust its
# X-Forwarded-Proto for request.is_secure(), and its X-Forwarded-For (last hop) as the client IP
# for the lockout. Only set it when the proxy overwrites these headers.
BEHIND_PROXY = env_bool("BEHIND_PROXY")
if BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

    def forwarded_client_ip(request):  # type: ignore[no-untyped-def]
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        hops = [h for h in hops if h]
        return hops[-1] if hops else request.META.get("REMOTE_ADDR")

    AXES_CLIENT_IP_CALLABLE = forwarded_client_ip

# SECURE_COOKIES=true when the admin is reached over HTTPS: session and CSRF cookies are sent
# over HTTPS only (the admin login stops working over plain HTTP).
SECURE_COOKIES = env_bool("SECURE_COOKIES")
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT")
# HSTS is off unless asked for: once a browser has it, plain HTTP stays refused for that long.
SECURE_HSTS_SECONDS = int(env_float("SECURE_HSTS_SECONDS", 0))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS")
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD")
