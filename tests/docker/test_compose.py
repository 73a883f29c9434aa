"""The container files, read as the engine reads them: docker/docker-compose.yml (and the
scale-out override), docker/.env.example, docker/Dockerfile, docker/entrypoint.sh,
docker/nginx.conf.example and .dockerignore. (No Docker engine here: the entrypoint itself runs
for real in test_entrypoint.py, nginx in test_nginx.py.)"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.servers import ROOT

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the compose files")

DOCKER = ROOT / "docker"
APP_ROLES = ("web", "worker", "beat")
REQUIRED_IN_ENV = {"IFLOW2API_API_KEYS"}  # uncommented and empty: the operator fills it in
UNCOMMENTED = {"IFLOW2API_API_KEYS", "POSTGRES_PASSWORD", "DATABASE_URL", "REDIS_URL"}


class Reset:
    """Compose's `!reset` tag (drop the value of the base file)."""

    def __init__(self, value: object) -> None:
        self.value = value


class ComposeLoader(yaml.SafeLoader):
    pass


ComposeLoader.add_constructor(
    "!reset", lambda loader, node: Reset(
        loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode)
        else loader.construct_scalar(node)))


def load(name: str) -> dict:
    return yaml.load((DOCKER / name).read_text(), Loader=ComposeLoader)


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$, enough for these files."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        current = env.get(name, "")
        if op == ":?" and not current:
            raise ValueError(arg)
        if op == ":-" and not current:
            return arg
        return current

    pattern = r"\$\$|\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:[-?])(?P<arg>[^}]*))?\}"
    return re.sub(pattern, one, value)


def compose_variables() -> set[str]:
    names: set[str] = set()
    for name in ("docker-compose.yml", "docker-compose.scale.yml"):
        text = re.sub(r"\$\$", "", (DOCKER / name).read_text())
        names |= set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    return names


def env_example() -> tuple[dict[str, str], dict[str, str]]:
    """(uncommented settings, commented-out settings) of docker/.env.example."""
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if match := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            active[match.group(1)] = match.group(2)
        elif match := re.fullmatch(r"# ([A-Z][A-Z0-9_]*)=(.*)", line):
            commented[match.group(1)] = match.group(2)
    return active, commented


def documented_settings() -> set[str]:
    """The variables of the settings table in docs/configuration.md."""
    table = (ROOT / "docs" / "configuration.md").read_text()
    names: set[str] = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1]))
    return names


def settings_variables() -> set[str]:
    text = (ROOT / "iflow2api_site" / "settings.py").read_text()
    names = set(re.findall(r"env_\w+\(\s*\"([A-Z][A-Z0-9_]+)\"", text))
    importers = (ROOT / "accounts" / "importers.py").read_text()
    names |= set(re.findall(r"env(?:\.get\(|\[)\"([A-Z][A-Z0-9_]+)\"", importers))
    return names


def entrypoint_variables() -> set[str]:
    text = (DOCKER / "entrypoint.sh").read_text()
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]+):-", text)) - {"IFLOW2API_HOME"}


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def shutdown_grace_default() -> float:
    text = (ROOT / "iflow2api_site" / "settings.py").read_text()
    return float(re.search(r'env_float\("SHUTDOWN_GRACE_SECONDS", ([\d.]+)\)', text).group(1))


def dockerfile_instructions() -> list[tuple[str, str]]:
    lines = []
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        if not line.strip().startswith("#"):
            lines.append(line)
    text = "\n".join(lines).replace("\\\n", " ")
    return [(m.group(1).upper(), m.group(2).strip())
            for m in re.finditer(r"^([A-Za-z]+)\s+(.*)$", text, re.M)]


# --- docker-compose.yml ------------------------------------------------------------------------


def test_compose_names_every_service_with_its_health_check():
    services = load("docker-compose.yml")["services"]
    assert set(services) == {"web", "worker", "beat", "postgres", "redis"}
    web_check = " ".join(services["web"]["healthcheck"]["test"])
    assert "/health" in web_check and "urllib" in web_check and "curl" not in web_check
    assert "inspect ping" in " ".join(services["worker"]["healthcheck"]["test"])
    # Beat serves nothing: the image's HTTP probe is switched off rather than always failing.
    assert services["beat"]["healthcheck"] == {"disable": True}
    assert services["postgres"]["image"] == "postgres:16-alpine"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["image"] == "redis:7-alpine"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_app_services_wait_for_healthy_postgres_and_redis():
    services = load("docker-compose.yml")["services"]
    for role in APP_ROLES:
        service = services[role]
        assert service["command"] == [role]
        assert service["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }, role
        assert service["env_file"] == ".env"
        assert service["init"] is True  # signals reach the entrypoint while it waits
        assert "data:/data" in service["volumes"]  # one key file for web, worker and beat
        build = service["build"]
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == (
            DOCKER / "Dockerfile").resolve()
    # `docker stop` waits longer than the web server's drain and a worker's warm shutdown.
    assert seconds(services["web"]["stop_grace_period"]) > shutdown_grace_default() + 5
    assert seconds(services["worker"]["stop_grace_period"]) >= 30
    for store in ("postgres", "redis"):
        assert "ports" not in services[store] and "depends_on" not in services[store]


def test_compose_requires_client_keys_and_publishes_on_loopback():
    compose = load("docker-compose.yml")
    web = compose["services"]["web"]
    required = web["environment"]["IFLOW2API_API_KEYS"]
    with pytest.raises(ValueError, match="IFLOW2API_API_KEYS"):
        interpolate(required, {})
    assert interpolate(required, {"IFLOW2API_API_KEYS": "sk-a,sk-b"}) == "sk-a,sk-b"
    assert [interpolate(p, {}) for p in web["ports"]] == ["127.0.0.1:28000:28000"]
    assert [s for s, v in compose["services"].items() if "ports" in v] == ["web"]
    postgres = compose["services"]["postgres"]
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        interpolate(postgres["environment"]["POSTGRES_PASSWORD"], {})
    assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"]
    assert set(compose["volumes"]) == {"data", "postgres-data"}


def test_the_scale_override_puts_nginx_in_front_of_the_replicas():
    scale = load("docker-compose.scale.yml")["services"]
    assert isinstance(scale["web"]["ports"], Reset) and scale["web"]["ports"].value == []
    nginx = scale["nginx"]
    assert "./nginx.conf.example:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    assert nginx["depends_on"] == {"web": {"condition": "service_healthy"}}
    assert "/health" in " ".join(nginx["healthcheck"]["test"])
    assert [interpolate(p, {}) for p in nginx["ports"]] == ["127.0.0.1:28000:80"]


# --- .env.example ------------------------------------------------------------------------------


def test_env_example_lists_every_setting():
    active, commented = env_example()
    listed = set(active) | set(commented)
    for source, names in [("docs/configuration.md", documented_settings()),
                          ("settings.py / importers.py", settings_variables()),
                          ("the compose files", compose_variables()),
                          ("the entrypoint", entrypoint_variables())]:
        assert names, source
        assert names <= listed, f"missing from docker/.env.example ({source}): " \
                                f"{sorted(names - listed)}"
    assert not set(active) & set(commented)


def test_every_setting_is_in_the_configuration_table():
    missing = settings_variables() - documented_settings()
    assert not missing, f"settings missing from docs/configuration.md: {sorted(missing)}"


def test_env_example_points_at_the_compose_services():
    active, commented = env_example()
    assert set(active) == UNCOMMENTED  # everything else stays at its default until set
    for name, value in active.items():
        assert value or name in REQUIRED_IN_ENV, f"{name} is empty: an empty value is not " \
                                                  "the default"
    database = urlsplit(active["DATABASE_URL"])
    assert database.scheme == "postgresql" and database.hostname == "postgres"
    assert database.password == active["POSTGRES_PASSWORD"]
    assert database.username == commented["POSTGRES_USER"]
    assert database.path == "/" + commented["POSTGRES_DB"]
    assert urlsplit(active["REDIS_URL"]).hostname == "redis"
    # The documented container layout is what the image sets.
    assert commented["IFLOW2API_HOME"] == "/data"
    assert commented["IFLOW2API_HOST"] == "0.0.0.0"
    assert commented["IFLOW2API_PORT"] == "28000"
    text = (DOCKER / ".env.example").read_text()
    assert "MUST all use the same keys" in text and "Back it up" in text
    assert "PUBLIC_BASE_URL" in text and "/accounts/oauth/callback/" in text


# --- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_runs_as_a_non_root_user_with_health_check_and_port():
    steps = dockerfile_instructions()
    kinds = [kind for kind, _ in steps]
    assert steps[0][0] == "FROM" and re.fullmatch(r"python:3\.1[12]-slim", steps[0][1])
    user = [arg for kind, arg in steps if kind == "USER"][-1].split(":")[0]
    assert user not in {"root", "0"}
    assert any(kind == "RUN" and "useradd" in arg and user in arg for kind, arg in steps)
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN")
    (health,) = [arg for kind, arg in steps if kind == "HEALTHCHECK"]
    assert "/health" in health and "urllib" in health and "curl" not in health
    assert ("EXPOSE", "28000") in steps
    assert ("VOLUME", '["/data"]') in steps
    env = " ".join(arg for kind, arg in steps if kind == "ENV")
    assert "IFLOW2API_HOME=/data" in env and "IFLOW2API_HOST=0.0.0.0" in env
    assert json.loads(dict(steps)["ENTRYPOINT"]) == ["iflow2api-entrypoint"]
    assert json.loads(dict(steps)["CMD"]) == ["web"]
    assert any(kind == "COPY" and arg.startswith("docker/entrypoint.sh ") and
               arg.endswith("/iflow2api-entrypoint") for kind, arg in steps)


def test_dockerfile_installs_the_extras_and_collects_static_files():
    steps = dockerfile_instructions()
    runs = [arg for kind, arg in steps if kind == "RUN"]
    (install,) = [run for run in runs if "pip install" in run]
    extras = re.search(r"\[([a-z,]+)\]", install).group(1).split(",")
    assert extras == ["postgres", "redis"]
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert set(extras) <= set(declared)
    (collect,) = [run for run in runs if "collectstatic" in run]
    assert "iflow2api collectstatic --noinput" in collect
    assert "IFLOW2API_HOME=/tmp/" in collect and "DJANGO_SECRET_KEY=" in collect
    assert "rm -rf /tmp/build-home" in collect  # the throwaway home's generated keys go


def test_build_context_keeps_what_the_image_needs():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#") and not line.startswith("!")]
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    needed = ["pyproject.toml", "README.md", "templates", "static", "docker/entrypoint.sh",
              *(name.rstrip("*") for name in packages)]
    for path in needed:
        assert (ROOT / path).exists(), path
        prefixes = [str(Path(*Path(path).parts[:i])) for i in range(1, len(Path(path).parts) + 1)]
        for pattern in patterns:
            assert not any(fnmatch.fnmatch(p, pattern.lstrip("/")) for p in prefixes), \
                f".dockerignore's {pattern!r} drops {path}"
    for bulky in (".git", ".venv", "node_modules", "tests"):
        assert bulky in patterns


# --- entrypoint.sh and nginx.conf.example ------------------------------------------------------


def test_entrypoint_is_posix_sh_and_execs_every_role():
    path = DOCKER / "entrypoint.sh"
    text = path.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert re.search(r"^set -eu$", text, re.M)
    assert subprocess.run(["sh", "-n", str(path)], capture_output=True).returncode == 0
    for role, command in [("web", "exec iflow2api serve --no-migrate"),
                          ("worker", "exec celery -A iflow2api_site worker"),
                          ("beat", "exec celery -A iflow2api_site beat"),
                          ("*", 'exec "$role" "$@"')]:
        block = re.search(rf"^    {re.escape(role)}\)\n(.*?);;", text, re.M | re.S)
        assert block and command in block.group(1), role
    assert '"${IFLOW2API_HOST:-0.0.0.0}" --port "${IFLOW2API_PORT:-28000}"' in text
    assert "pg_advisory_lock" in text and 'call_command("migrate"' in text
    if shutil.which("shellcheck"):
        check = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stdout


def test_nginx_example_is_streaming_friendly():
    text = (DOCKER / "nginx.conf.example").read_text()
    directives = {" ".join(line.split()) for line in text.splitlines()
                  if line.strip() and not line.strip().startswith("#")}
    # Request buffering stays on: see the example (and the rolling restart in test_nginx.py).
    for directive in ["proxy_buffering off;", "proxy_request_buffering on;",
                      "proxy_read_timeout 3600s;", "proxy_send_timeout 3600s;",
                      "send_timeout 3600s;", "proxy_http_version 1.1;",
                      "client_max_body_size 64m;", "keepalive 64;",
                      "proxy_set_header X-Forwarded-For $remote_addr;",
                      "proxy_set_header X-Forwarded-Proto $scheme;",
                      "proxy_set_header Upgrade $http_upgrade;",
                      "proxy_set_header Connection $connection_upgrade;",
                      "location /ws/ {", "server web:28000 max_fails=3 fail_timeout=10s;",
                      "proxy_next_upstream error timeout http_503 non_idempotent;"]:
        assert directive in directives, directive
