"""`iflow2api iflow_login` and `iflow2api addaccount`, run as a user runs them (subprocesses
against the fake iFlow), checking what they print and what lands in the database."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.oauth import FakeOAuth
from tests.servers import ROOT

URL_RE = re.compile(r"^\s*(http://\S+/oauth\?\S+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOAuth]:
    with FakeOAuth() as server:
        yield server


@pytest.fixture(scope="module")
def home() -> str:
    """One data directory for the module: the first command migrates it."""
    return tempfile.mkdtemp(prefix="iflow2api-login-cli-")


def cli_env(fake: FakeOAuth, home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "PUBLIC_BASE_URL"}}
    env.update({"IFLOW2API_HOME": home, "IMPORT_IFLOW_SETTINGS": "0", "PYTHONUNBUFFERED": "1",
                "IFLOW_OAUTH_BASE_URL": fake.oauth_base_url,
                "IFLOW_PLATFORM_BASE_URL": fake.platform_base_url})
    return env


def run_cli(fake: FakeOAuth, home: str, *args: str, stdin: str = "",
            timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iflow2api_site.cli", *args], cwd=ROOT,
                          env=cli_env(fake, home), input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def start_cli(fake: FakeOAuth, home: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "iflow2api_site.cli", *args], cwd=ROOT,
                            env=cli_env(fake, home), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_authorize_url(process: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    """Read stdout until the authorize URL shows; returns (URL, what was read)."""
    seen: list[str] = []
    found = threading.Event()

    def reader() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            seen.append(line)
            if URL_RE.search(line):
                found.set()
                return
        found.set()

    threading.Thread(target=reader, daemon=True).start()
    if not found.wait(timeout) or not URL_RE.search("".join(seen)):
        process.kill()
        raise AssertionError("no authorize URL printed:\n" + "".join(seen)
                             + process.stderr.read())  # type: ignore[union-attr]
    return URL_RE.search("".join(seen)).group(1), "".join(seen)


def secrets_of(fake: FakeOAuth) -> list[str]:
    values = [*fake.access_tokens, *fake.refresh_tokens, fake.user.api_key, *fake.codes,
              *fake.cookies, *(c.api_key for c in fake.cookies.values())]
    return [v for v in values if v]


def assert_no_secrets(fake: FakeOAuth, *outputs: str, extra: tuple[str, ...] = ()) -> None:
    for text in outputs:
        for secret in (*secrets_of(fake), *extra):
            assert secret not in text, "a secret was printed"
        assert "Traceback" not in text


def db_rows(home: str, sql: str, *params: object) -> list[tuple]:
    with sqlite3.connect(Path(home) / "db.sqlite3") as db:
        return db.execute(sql, params).fetchall()


def account_row(home: str, account_id: int) -> dict[str, str]:
    names = ["label", "email", "api_key", "oauth_access_token", "oauth_refresh_token", "cookie",
             "provider"]
    (row,) = db_rows(home, f"SELECT {', '.join(names)} FROM accounts_account WHERE id = ?",
                     account_id)
    return dict(zip(names, row, strict=True))


def saved_id(output: str) -> int:
    return int(re.search(r"Saved iFlow account #(\d+)", output).group(1))


def test_iflow_login_paste(fake, home):
    process = start_cli(fake, home, "iflow_login", "--paste")
    url, _ = read_authorize_url(process)
    assert "redirect=http%3A%2F%2F127.0.0.1%3A28000%2Faccounts%2Foauth%2Fcallback%2F" in url
    landed = fake.approve(url, email="paste@example.com")
    out, err = process.communicate(landed + "\n", timeout=60)
    assert process.returncode == 0, err
    assert "paste@example.com" in out and "sk-…cdef" in out
    row = account_row(home, saved_id(out))
    assert row["label"] == "iFlow paste@example.com" and row["provider"] == "iflow"
    for name in ("api_key", "oauth_access_token", "oauth_refresh_token"):
        assert row[name].startswith("fernet:")
    assert fake.user.api_key not in str(row)
    assert_no_secrets(fake, out, err)


def test_iflow_login_loopback_listener(fake, home):
    process = start_cli(fake, home, "iflow_login", "--timeout", "60")
    url, _ = read_authorize_url(process)
    redirect = re.search(r"redirect=([^&]+)", url).group(1)
    assert re.fullmatch(r"http%3A%2F%2F127\.0\.0\.1%3A\d+%2Foauth2callback", redirect)
    # The browser: approve on the fake, whose 302 goes to the command's listener.
    page = httpx.get(url + "&auto=1", follow_redirects=True, timeout=30)
    assert page.status_code == 200 and "Logged in as user@example.com" in page.text
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    account_id = saved_id(out)
    assert "user@example.com" in out
    assert account_row(home, account_id)["email"] == "user@example.com"
    # The token exchange used the listener's redirect, the same as the authorize URL's.
    exchange = fake.requests_of("token")[-1]
    assert exchange.form["redirect_uri"].startswith("http://127.0.0.1:")
    assert exchange.form["redirect_uri"].endswith("/oauth2callback")
    assert_no_secrets(fake, out, err, page.text)


def test_iflow_login_times_out_cleanly(fake, home):
    result = run_cli(fake, home, "iflow_login", "--timeout", "1")
    assert result.returncode != 0
    assert "no login within 1 s" in result.stderr and "Traceback" not in result.stderr


def test_iflow_login_cookie_from_stdin_and_argument(fake, home):
    bxauth, _ = fake.add_cookie(name="cli", masked=True)
    result = run_cli(fake, home, "iflow_login", "--cookie", "-", stdin=bxauth + "\n")
    assert result.returncode == 0, result.stderr
    account_id = saved_id(result.stdout)
    assert "“iFlow cli (cookie)”" in result.stdout and "key valid until" in result.stdout
    row = account_row(home, account_id)
    assert row["cookie"].startswith("fernet:") and row["api_key"].startswith("fernet:")
    assert fake.calls("apikey_reissue") >= 1
    again = run_cli(fake, home, "iflow_login", "--cookie", f"BXAuth={bxauth};")
    assert again.returncode == 0 and saved_id(again.stdout) == account_id
    assert_no_secrets(fake, result.stdout, result.stderr, again.stdout, again.stderr)

    dead = run_cli(fake, home, "iflow_login", "--cookie", "-", stdin="bx-dead-cookie-4321\n")
    assert dead.returncode != 0 and "refused" in dead.stderr
    assert_no_secrets(fake, dead.stdout, dead.stderr, extra=("bx-dead-cookie-4321",))


def test_addaccount(fake, home):
    key = "sk-addaccount-secret-5678"
    result = run_cli(fake, home, "addaccount", "--provider", "openai", "--label", "DeepSeek",
                     "--base-url", "https://api.deepseek.com/v1", "--api-key", "-",
                     "--models", "deepseek-chat,deepseek-reasoner", stdin=key + "\n")
    assert result.returncode == 0, result.stderr
    account_id = int(result.stdout.strip())
    assert "DeepSeek" in result.stderr and "sk-…5678" in result.stderr
    row = account_row(home, account_id)
    assert row["provider"] == "openai" and row["api_key"].startswith("fernet:")
    linked = db_rows(home, "SELECT m.model_id, m.provider FROM accounts_modelinfo m JOIN "
                     "accounts_modelinfo_accounts l ON l.modelinfo_id = m.id "
                     "WHERE l.account_id = ? ORDER BY m.model_id", account_id)
    assert linked == [("deepseek-chat", "openai"), ("deepseek-reasoner", "openai")]
    assert_no_secrets(fake, result.stdout, result.stderr, extra=(key,))

    bad = run_cli(fake, home, "addaccount", "--label", "x", "--base-url", "ftp://nope",
                  "--api-key", key)
    assert bad.returncode != 0 and "base_url" in bad.stderr
    assert_no_secrets(fake, bad.stdout, bad.stderr, extra=(key,))


def test_the_served_login_pages_need_an_admin(gateway):
    answer = httpx.get(gateway.url + "/accounts/oauth/start/", follow_redirects=False)
    assert answer.status_code == 302
    assert answer.headers["location"].startswith("/admin/login/?next=/accounts/oauth/start/")
