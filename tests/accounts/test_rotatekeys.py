"""`iflow2api rotatekeys [--new-key]`: every secret moves to the newest key, all or nothing."""

from __future__ import annotations

import io
import stat
import tempfile
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from accounts.models import Account
from tests.accounts.test_crypto import CREATE_ACCOUNT, SECRETS, assert_no_plaintext, cli
from tests.services import fresh_postgres_database

pytestmark = pytest.mark.django_db

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()
KEY_C = Fernet.generate_key().decode()


def raw_rows() -> dict[int, tuple[str, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, {', '.join(SECRETS)} FROM accounts_account ORDER BY id")
        return {row[0]: row[1:] for row in cursor.fetchall()}


def make_accounts() -> list[Account]:
    return [
        Account.objects.create(label="full", base_url="http://127.0.0.1:9/v1", **SECRETS),
        Account.objects.create(label="key only", base_url="http://127.0.0.1:9/v1",
                               api_key="sk-second-plain-key-0b7d"),
        Account.objects.create(label="no secrets", base_url="http://127.0.0.1:9/v1"),
    ]


def rotate(*args: str) -> str:
    out = io.StringIO()
    call_command("rotatekeys", *args, stdout=out)
    return out.getvalue()


def readable_with(key: str, value: str) -> bool:
    try:
        Fernet(key.encode()).decrypt(value.removeprefix("fernet:").encode())
        return True
    except Exception:
        return False


def test_rotation_moves_every_secret_to_the_newest_key(settings):
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    make_accounts()
    before = raw_rows()

    settings.FIELD_ENCRYPTION_KEYS = [KEY_B, KEY_A]
    output = rotate()
    assert "Re-encrypted 5 secrets with the newest key, 5 of them were under an older key" \
        in output
    assert "older key(s) can be removed from FIELD_ENCRYPTION_KEY" in output
    for value in [*SECRETS.values(), "sk-second-plain-key-0b7d", KEY_A, KEY_B]:
        assert value not in output
    after = raw_rows()
    for pk, values in after.items():
        for old, new in zip(before[pk], values, strict=True):
            assert (old == "") == (new == "")
            if new:
                assert new != old and readable_with(KEY_B, new) and not readable_with(KEY_A, new)

    settings.FIELD_ENCRYPTION_KEYS = [KEY_B]  # the old key can go now
    full = Account.objects.get(label="full")
    assert {k: getattr(full, k) for k in SECRETS} == SECRETS
    assert Account.objects.get(label="key only").api_key == "sk-second-plain-key-0b7d"

    again = rotate()  # idempotent; nothing was under an older key
    assert "Re-encrypted 5 secrets with the newest key." in again


def test_rotation_is_all_or_nothing(settings):
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    make_accounts()
    settings.FIELD_ENCRYPTION_KEYS = [KEY_C]
    stranger = Account.objects.create(label="other key", base_url="http://127.0.0.1:9/v1",
                                      api_key="sk-under-another-key")
    before = raw_rows()

    settings.FIELD_ENCRYPTION_KEYS = [KEY_B, KEY_A]
    with pytest.raises(CommandError) as raised:
        rotate()
    message = str(raised.value)
    assert f"account {stranger.pk}: api_key" in message and "Nothing was re-encrypted" in message
    assert "FIELD_ENCRYPTION_KEY" in message
    assert "sk-under-another-key" not in message
    assert raw_rows() == before


def test_new_key_goes_first_in_the_key_file(settings, tmp_path):
    key_file = tmp_path / "field_encryption.key"
    key_file.write_text(KEY_A + "\n")
    key_file.chmod(0o600)
    settings.FIELD_ENCRYPTION_KEYS = []
    settings.FIELD_ENCRYPTION_KEY_FILE = key_file
    make_accounts()

    output = rotate("--new-key")
    assert f"Added a new key first in {key_file}" in output
    assert "Re-encrypted 5 secrets" in output
    keys = key_file.read_text().split()
    assert len(keys) == 2 and keys[1] == KEY_A
    assert keys[0] not in output
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    for values in raw_rows().values():
        assert all(readable_with(keys[0], v) for v in values if v)

    key_file.write_text(keys[0] + "\n")  # drop the old key: everything still reads
    full = Account.objects.get(label="full")
    assert {k: getattr(full, k) for k in SECRETS} == SECRETS


def test_new_key_is_refused_with_environment_keys_or_unreadable_secrets(settings, tmp_path):
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    make_accounts()
    with pytest.raises(CommandError, match="FIELD_ENCRYPTION_KEY is set"):
        rotate("--new-key")

    key_file = tmp_path / "field_encryption.key"
    key_file.write_text(KEY_B + "\n")
    settings.FIELD_ENCRYPTION_KEYS = []
    settings.FIELD_ENCRYPTION_KEY_FILE = key_file
    with pytest.raises(CommandError, match="cannot be decrypted"):
        rotate("--new-key")
    assert key_file.read_text() == KEY_B + "\n"  # no key added on top of a wrong one


def test_rotation_on_postgres():
    home = tempfile.mkdtemp(prefix="iflow2api-rotate-")
    with fresh_postgres_database() as url:
        env = {"DATABASE_URL": url}
        assert cli(home, "migrate", "--noinput", env=env).returncode == 0
        assert cli(home, "shell", "-c", CREATE_ACCOUNT, env=env).returncode == 0
        with psycopg.connect(url) as conn:
            before = conn.execute(f"SELECT {', '.join(SECRETS)} FROM accounts_account").fetchone()

        result = cli(home, "rotatekeys", "--new-key", env=env)
        assert result.returncode == 0, result.stderr
        assert "Re-encrypted 4 secrets" in result.stdout
        with psycopg.connect(url) as conn:
            after = conn.execute(f"SELECT {', '.join(SECRETS)} FROM accounts_account").fetchone()
        assert_no_plaintext(dict(zip(SECRETS, after, strict=True)))
        assert all(a != b for a, b in zip(before, after, strict=True))

        newest = (Path(home) / "field_encryption.key").read_text().split()[0]
        read = cli(home, "shell", "-c", "from accounts.models import Account; "
                   "print(Account.objects.get().cookie)",
                   env={**env, "FIELD_ENCRYPTION_KEY": newest})
        assert read.returncode == 0, read.stderr
        assert SECRETS["cookie"] in read.stdout
