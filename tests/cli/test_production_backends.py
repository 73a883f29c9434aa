"""DATABASE_URL and REDIS_URL switch the server to PostgreSQL and Redis, for real."""

from __future__ import annotations

import subprocess
import sys

import httpx
import psycopg

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import ROOT, GatewayServer
from tests.services import REDIS_URL, fresh_postgres_database, require_redis

PROBE = (
    "import django; django.setup();"
    "from django.conf import settings; from django.core.cache import caches;"
    "cache = caches['default'];"
    "from django.db import connection;"
    "cache.set('probe', 41); cache.incr('probe');"
    "print(connection.vendor, type(cache).__name__, cache.get('probe'),"
    " settings.CHANNEL_LAYERS['default']['BACKEND'], settings.CELERY_BROKER_URL)"
)


def test_server_runs_on_postgres_and_redis(upstream):
    require_redis()
    with fresh_postgres_database() as database_url:
        env = {"DATABASE_URL": database_url, "REDIS_URL": REDIS_URL,
               "IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": upstream.base_url}
        with GatewayServer(env) as server:
            upstream.script(sc.text("from postgres"))
            answer = httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
                "model": "glm-5", "messages": [{"role": "user", "content": "hi"}]})
            assert answer.json()["choices"][0]["message"]["content"] == "from postgres"
            probe = subprocess.run(
                [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True,
                env={**server.env, "DJANGO_SETTINGS_MODULE": "iflow2api_site.settings"},
                timeout=60)
            assert probe.returncode == 0, probe.stderr
            assert probe.stdout.split() == ["postgresql", "RedisCache", "42",
                                            "channels_redis.core.RedisChannelLayer", REDIS_URL]
        with psycopg.connect(database_url) as conn:
            stored = conn.execute("SELECT api_key FROM accounts_account").fetchone()[0]
            models = conn.execute("SELECT count(*) FROM accounts_modelinfo").fetchone()[0]
        assert stored.startswith("fernet:") and FAKE_KEY not in stored
        assert models >= 12
