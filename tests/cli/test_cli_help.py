"""`iflow2api`, `iflow2api --help` and `--version` (issue 17): our commands, one line each, in
the user's language, and our version; Django's full list behind `help --all`."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib

import pytest

from iflow2api_site.cli_help import COMMANDS
from tests.servers import ROOT

OURS = ["serve", "addaccount", "iflow_login", "createkey", "syncmodels", "setprice", "rotatekeys",
        "autostart", "tray", "createsuperuser"]


def iflow2api(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in {"LANG", "LC_ALL", "LC_MESSAGES", "IFLOW2API_LANG", "DATABASE_URL",
                          "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    home = tempfile.mkdtemp(prefix="iflow2api-help-")
    result = subprocess.run([sys.executable, "-m", "iflow2api_site.cli", *args], cwd=ROOT,
                            env={**clean, "IFLOW2API_HOME": home, **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def listed_commands(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines() if line.startswith("  ")]


@pytest.mark.parametrize("args", [(), ("--help",), ("-h",), ("help",)],
                         ids=["bare", "--help", "-h", "help"])
def test_the_short_list_of_our_commands(args):
    out = iflow2api(*args, LANG="C.UTF-8").stdout
    assert listed_commands(out) == OURS
    for line in out.splitlines():
        if line.startswith("  "):  # one line each, with a description
            assert len(line.split(maxsplit=1)) == 2 and len(line) <= 100, line
    assert "help --all" in out
    assert "migrate" not in out and "dumpdata" not in out  # Django's are behind --all


def test_help_all_is_djangos_full_list():
    out = iflow2api("help", "--all").stdout
    assert "migrate" in out and "dumpdata" in out and "addaccount" in out


def test_the_version_is_ours():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert iflow2api("--version").stdout.strip() == declared
    assert iflow2api("serve", "--version").stdout.strip() == declared  # not Django's 5.2
    assert declared in iflow2api("--help").stdout


def test_the_short_list_speaks_chinese():
    by_option = iflow2api("--lang", "zh-hans", "--help").stdout
    assert "命令" in by_option and "创建客户端 API 密钥" in by_option
    assert listed_commands(by_option) == OURS
    assert "创建客户端 API 密钥" in iflow2api(LANG="zh_CN.UTF-8").stdout
    assert "create a client API key" in iflow2api(LANG="C.UTF-8").stdout


def test_every_curated_command_exists():
    out = iflow2api("help", "--all").stdout
    assert [name for name, _line in COMMANDS] == OURS
    for name in OURS:
        assert name in out
