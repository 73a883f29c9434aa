"""Secrets at rest: encrypted rows (SQLite and PostgreSQL), key rings, and a loud failure
under a wrong key (system check, `serve`)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile

import psycopg
import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.db import connection

from accounts import crypto
from accounts.checks import check_stored_secrets, ensure_secrets_readable
from accounts.models import Account
from tests.servers import ROOT, free_port
from tests.services import fresh_postgres_database

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()
SECRETS = {
    "api_key": "sk-plain-api-key-4f1c9a",
    "oauth_access_token": "at-plain-access-token-77e2",
    "oauth_refresh_token": "rt-plain-refresh-token-91b0",
    "cookie": "BXAuth-plain-cookie-value-3d5e",
}
CREATE_ACCOUNT = (
    "from accounts.models import Account; Account.objects.create(label='raw', "
    "base_url='http://127.0.0.1:9/v1', "
    + ", ".join(f"{k}={v!r}" for k, v in SECRETS.items()) + ")"
)


def raw_row(pk: int) -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(SECRETS)} FROM accounts_account WHERE id = %s", [pk])
        return dict(zip(SECRETS, cursor.fetchone(), strict=True))


def assert_no_plaintext(row: dict[str, str]) -> None:
    for name, value in row.items():
        assert value.startswith("fernet:"), name
        for secret in SECRETS.values():
            assert secret not in value


# ------------------------------------------------------------------------------ key rings


def test_settings_changes_are_picked_up(settings):
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    stored = crypto.encrypt("hello")
    settings.FIELD_ENCRYPTION_KEYS = [KEY_B]
    with pytest.raises(crypto.SecretDecryptionError, match="FIELD_ENCRYPTION_KEY"):
        crypto.decrypt(stored)
    settings.FIELD_ENCRYPTION_KEYS = [KEY_B, KEY_A]  # newest first, the old one still reads
    assert crypto.decrypt(stored) == "hello"
    fresh = crypto.encrypt("world")
    assert Fernet(KEY_B.encode()).decrypt(fresh.removeprefix("fernet:").encode()) == b"world"
    crypto.reset_keys()  # explicit reset works too
    assert crypto.decrypt(fresh) == "world"


def test_wrong_key_never_yields_ciphertext(settings):
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    stored = crypto.encrypt("sk-x")
    settings.FIELD_ENCRYPTION_KEYS = [KEY_B]
    with pytest.raises(crypto.SecretDecryptionError):
        crypto.EncryptedTextField().from_db_value(stored, None, connection)
    with pytest.raises(crypto.SecretDecryptionError, match="not encrypted"):
        crypto.decrypt("sk-plain")


def test_key_file_is_created_0600_and_reread_when_it_changes(settings, tmp_path):
    path = tmp_path / "home" / "field_encryption.key"
    settings.FIELD_ENCRYPTION_KEYS = []
    settings.FIELD_ENCRYPTION_KEY_FILE = path
    stored = crypto.encrypt("secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text().split()
    assert len(first) == 1

    crypto.prepend_key_to_file(crypto.new_key())
    keys = path.read_text().split()
    assert len(keys) == 2 and keys[1] == first[0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert crypto.decrypt(stored) == "secret"  # the old key still reads
    assert crypto.keyring().keys == tuple(keys)

    # Another process (rotatekeys) rewrites the file: seen without a reset or a restart.
    path.write_text(f"# comment lines are ignored\n{KEY_B}\n")
    assert crypto.keyring().keys == (KEY_B,)

    # A half-done edit or a deleted file does not swap the keys of a running process.
    path.write_text("")
    assert crypto.keyring().keys == (KEY_B,)
    path.unlink()
    assert crypto.keyring().keys == (KEY_B,) and not path.exists()


def test_unusable_key_material_is_a_clear_error(settings, tmp_path):
    settings.FIELD_ENCRYPTION_KEYS = ["not-a-key"]
    with pytest.raises(ImproperlyConfigured, match="FIELD_ENCRYPTION_KEY"):
        crypto.encrypt("x")
    settings.FIELD_ENCRYPTION_KEYS = []
    settings.FIELD_ENCRYPTION_KEY_FILE = tmp_path / "bad.key"
    (tmp_path / "bad.key").write_text("garbage\n")
    with pytest.raises(ImproperlyConfigured, match=r"bad\.key"):
        crypto.encrypt("x")


# ------------------------------------------------------------------------------ the check


@pytest.mark.django_db
def test_check_fails_loudly_under_a_wrong_key_and_reveals_nothing(settings):
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    account = Account.objects.create(label="a", base_url="http://127.0.0.1:9/v1", **SECRETS)
    Account.objects.create(label="empty", base_url="http://127.0.0.1:9/v1")
    assert check_stored_secrets() == []
    ensure_secrets_readable()

    settings.FIELD_ENCRYPTION_KEYS = [KEY_B]
    [error] = check_stored_secrets()
    assert error.id == "accounts.E002" and error.is_serious()
    assert "4 of 4 stored secrets cannot be decrypted" in error.msg
    assert f"account {account.pk}: api_key" in error.msg
    assert "FIELD_ENCRYPTION_KEY" in error.hint and str(settings.FIELD_ENCRYPTION_KEY_FILE) in \
        error.hint
    with pytest.raises(CommandError) as raised:
        ensure_secrets_readable()
    text = f"{error.msg} {error.hint} {raised.value}"
    raw = raw_row(account.pk)
    for value in [*SECRETS.values(), *raw.values(), KEY_A, KEY_B]:
        assert value not in text

    settings.FIELD_ENCRYPTION_KEYS = ["garbage"]
    [error] = check_stored_secrets()
    assert error.id == "accounts.E001" and "FIELD_ENCRYPTION_KEY" in error.msg

    settings.FIELD_ENCRYPTION_KEYS = [KEY_B, KEY_A]
    assert check_stored_secrets() == []


# ------------------------------------------------------------------------------ raw rows


@pytest.mark.django_db
def test_sqlite_rows_hold_no_plaintext_secret():
    assert connection.vendor == "sqlite"
    account = Account.objects.create(label="a", base_url="http://127.0.0.1:9/v1", **SECRETS)
    assert_no_plaintext(raw_row(account.pk))
    again = Account.objects.get(pk=account.pk)
    assert {k: getattr(again, k) for k in SECRETS} == SECRETS
    # Updates go through the same field.
    Account.objects.filter(pk=account.pk).update(api_key="sk-plain-api-key-4f1c9a")
    assert_no_plaintext(raw_row(account.pk))


def cli(home: str, *args: str, env: dict[str, str] | None = None, timeout: float = 90):
    full_env = {k: v for k, v in os.environ.items()
                if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE",
                             "FIELD_ENCRYPTION_KEY", "IFLOW_API_KEY", "UPSTREAM_BASE_URL"}}
    full_env.update({"IFLOW2API_HOME": home, "IMPORT_IFLOW_SETTINGS": "0", **(env or {})})
    return subprocess.run([sys.executable, "-m", "iflow2api_site.cli", *args], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def test_postgres_rows_hold_no_plaintext_secret():
    home = tempfile.mkdtemp(prefix="iflow2api-crypto-")
    with fresh_postgres_database() as url:
        env = {"DATABASE_URL": url}
        assert cli(home, "migrate", "--noinput", env=env).returncode == 0
        made = cli(home, "shell", "-c", CREATE_ACCOUNT, env=env)
        assert made.returncode == 0, made.stderr
        with psycopg.connect(url) as conn:
            row = conn.execute(f"SELECT {', '.join(SECRETS)} FROM accounts_account").fetchone()
        assert_no_plaintext(dict(zip(SECRETS, row, strict=True)))
        read = cli(home, "shell", "-c", "from accounts.models import Account; "
                   "print(Account.objects.get().oauth_refresh_token)", env=env)
        assert SECRETS["oauth_refresh_token"] in read.stdout


# ------------------------------------------------------------------------------ serve


def test_serve_refuses_to_start_under_a_wrong_key():
    home = tempfile.mkdtemp(prefix="iflow2api-crypto-")
    port = str(free_port())
    assert cli(home, "migrate", "--noinput", env={"FIELD_ENCRYPTION_KEY": KEY_A}).returncode == 0
    made = cli(home, "shell", "-c", CREATE_ACCOUNT, env={"FIELD_ENCRYPTION_KEY": KEY_A})
    assert made.returncode == 0, made.stderr

    wrong = {"FIELD_ENCRYPTION_KEY": KEY_B}
    for extra in ([], ["--skip-checks"]):  # the system check, then serve's own check
        result = cli(home, "serve", "--port", port, *extra, env=wrong)
        assert result.returncode != 0
        assert "cannot be decrypted" in result.stderr and "FIELD_ENCRYPTION_KEY" in \
            result.stderr
        assert "Traceback" not in result.stderr
        assert "iflow2api serving" not in result.stdout
        for value in [*SECRETS.values(), KEY_A, KEY_B]:
            assert value not in result.stdout + result.stderr

    # With the key file instead of the environment, the message names the file.
    key_file = os.path.join(home, "field_encryption.key")
    with open(key_file, "w") as handle:
        handle.write(KEY_B + "\n")
    result = cli(home, "serve", "--port", port, "--skip-checks")
    assert result.returncode != 0 and key_file in result.stderr
    assert "Traceback" not in result.stderr
