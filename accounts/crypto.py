"""Secrets at rest: a text field encrypted with Fernet keys.

Keys come from FIELD_ENCRYPTION_KEY (comma separated, newest first) or a key file generated in
IFLOW2API_HOME with mode 0600. Decrypting with a wrong key raises instead of returning
ciphertext, so a secret can never be sent upstream garbled.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

PREFIX = "fernet:"


class SecretDecryptionError(ImproperlyConfigured):
    pass


def _key_file_keys() -> list[str]:
    path = settings.FIELD_ENCRYPTION_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(Fernet.generate_key().decode() + "\n")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@cache
def fernet() -> MultiFernet:
    keys = list(settings.FIELD_ENCRYPTION_KEYS) or _key_file_keys()
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY must be url-safe base64 Fernet keys, comma separated"
        ) from exc


def encrypt(value: str) -> str:
    return PREFIX + fernet().encrypt(value.encode()).decode()


def decrypt(value: str) -> str:
    if not value.startswith(PREFIX):
        raise SecretDecryptionError("a stored secret is not encrypted; the database was edited?")
    try:
        return fernet().decrypt(value[len(PREFIX) :].encode()).decode()
    except InvalidToken as exc:
        raise SecretDecryptionError(
            "cannot decrypt stored secrets: the encryption key does not match the one they were "
            f"written with (check FIELD_ENCRYPTION_KEY or {settings.FIELD_ENCRYPTION_KEY_FILE})"
        ) from exc


class EncryptedTextField(models.TextField):
    """Stores `fernet:<token>`; Python sees the clear text; empty stays empty."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> str:
        if value in (None, ""):
            return ""
        return decrypt(value)

    def get_prep_value(self, value: Any) -> str:
        value = super().get_prep_value(value)
        if value in (None, ""):
            return ""
        return encrypt(str(value))
