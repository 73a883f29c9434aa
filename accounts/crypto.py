"""Secrets at rest: a text field encrypted with Fernet keys.

Keys come from FIELD_ENCRYPTION_KEY (comma separated, newest first) or a key file generated in
IFLOW2API_HOME with mode 0600 (one key a line, newest first). New secrets are written with the
newest key; every listed key can read. Decrypting with a wrong key raises instead of returning
ciphertext, so a secret can never be sent upstream garbled.

The key ring is cached; the key file is re-read when it changes (so `rotatekeys --new-key` is
seen by a running server), and `reset_keys()` (also run when a test changes the settings)
drops the cache.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import models
from django.utils.translation import gettext

PREFIX = "fernet:"
ENV_NAME = "FIELD_ENCRYPTION_KEY"


class SecretDecryptionError(ImproperlyConfigured):
    pass


# ---------------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class KeyRing:
    keys: tuple[str, ...]
    source: str  # "FIELD_ENCRYPTION_KEY" or the key file's path
    fernet: MultiFernet
    newest: Fernet


def key_file_path() -> Path:
    return Path(settings.FIELD_ENCRYPTION_KEY_FILE)


def keys_from_environment() -> bool:
    """Whether FIELD_ENCRYPTION_KEY is set (the key file is then not used)."""
    return bool(settings.FIELD_ENCRYPTION_KEYS)


def where_keys_live() -> str:
    """For messages: where the keys come from, and the other place they could come from."""
    if keys_from_environment():
        return gettext("%(env)s (set in the environment; the key file %(file)s is not used)") % {
            "env": ENV_NAME, "file": key_file_path()}
    return gettext("the key file %(file)s (%(env)s is not set)") % {
        "env": ENV_NAME, "file": key_file_path()}


def _parse_keys(text: str) -> tuple[str, ...]:
    return tuple(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


@lru_cache(maxsize=8)
def _ring(keys: tuple[str, ...], source: str) -> KeyRing:
    if not keys:
        raise ImproperlyConfigured(gettext("no encryption key in %(source)s")
                                   % {"source": source})
    try:
        fernets = [Fernet(key.encode()) for key in keys]
    except ValueError as exc:
        raise ImproperlyConfigured(
            (gettext("%(source)s must hold url-safe base64 Fernet keys (32 bytes), newest "
                     "first: comma separated") if source == ENV_NAME else
             gettext("%(source)s must hold url-safe base64 Fernet keys (32 bytes), newest "
                     "first: one a line")) % {"source": source}
        ) from exc
    return KeyRing(keys=keys, source=source, fernet=MultiFernet(fernets), newest=fernets[0])


@lru_cache(maxsize=8)
def _file_ring(path: str, _mtime_ns: int, _size: int, _inode: int) -> KeyRing:
    return _ring(_parse_keys(Path(path).read_text()), path)


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(Fernet.generate_key().decode() + "\n")


_last_good: dict[str, KeyRing] = {}  # per key file: what this process last read from it


def keyring() -> KeyRing:
    """The current keys: FIELD_ENCRYPTION_KEY if set, else the key file (created on first use).

    A key file that vanishes or turns unreadable while this process runs (a half-done edit)
    does not replace the keys it read before: that would write secrets under a key nobody has.
    """
    env_keys = tuple(settings.FIELD_ENCRYPTION_KEYS)
    if env_keys:
        return _ring(env_keys, ENV_NAME)
    path = key_file_path()
    last = _last_good.get(str(path))
    try:
        stat = path.stat()
    except FileNotFoundError:
        if last is not None:
            return last
        _create_key_file(path)
        stat = path.stat()
    try:
        ring = _file_ring(str(path), stat.st_mtime_ns, stat.st_size, stat.st_ino)
    except (ImproperlyConfigured, OSError):
        if last is not None:
            return last
        raise
    _last_good[str(path)] = ring
    return ring


def fernet() -> MultiFernet:
    return keyring().fernet


def reset_keys(**_: Any) -> None:
    """Forget the cached keys (tests; a key change in this process)."""
    _ring.cache_clear()
    _file_ring.cache_clear()
    _last_good.clear()


def _on_setting_changed(setting: str, **_: Any) -> None:
    if setting.startswith("FIELD_ENCRYPTION_KEY"):
        reset_keys()


setting_changed.connect(_on_setting_changed, dispatch_uid="accounts.crypto.reset_keys")


def new_key() -> str:
    return Fernet.generate_key().decode()


def prepend_key_to_file(key: str) -> Path:
    """Write `key` first in the key file, keeping the older keys after it (mode 0600; the file
    is replaced atomically). Returns the path."""
    Fernet(key.encode())  # refuse garbage before touching the file
    path = key_file_path()
    old = _parse_keys(path.read_text()) if path.exists() else ()
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(f"{k}\n" for k in (key, *old)))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    os.chmod(path, 0o600)
    reset_keys()
    return path


# ---------------------------------------------------------------------------------- values


def encrypt(value: str) -> str:
    return PREFIX + fernet().encrypt(value.encode()).decode()


def _decryption_error() -> SecretDecryptionError:
    return SecretDecryptionError(
        gettext("cannot decrypt stored secrets: the encryption key does not match the one they "
                "were written with (keys come from %(where)s)") % {"where": where_keys_live()}
    )


def _token(value: str) -> bytes:
    if not value.startswith(PREFIX):
        raise SecretDecryptionError(gettext("a stored secret is not encrypted; the database was "
                                            "edited?"))
    return value[len(PREFIX) :].encode()


def decrypt(value: str) -> str:
    try:
        return fernet().decrypt(_token(value)).decode()
    except InvalidToken as exc:
        raise _decryption_error() from exc


def rotate(value: str) -> tuple[str, bool]:
    """A stored value re-encrypted with the newest key (MultiFernet.rotate), and whether it
    was under an older key."""
    ring = keyring()
    token = _token(value)
    try:
        ring.newest.decrypt(token)
        was_old = False
    except InvalidToken:
        was_old = True
    try:
        return PREFIX + ring.fernet.rotate(token).decode(), was_old
    except InvalidToken as exc:
        raise _decryption_error() from exc


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


# ---------------------------------------------------------------------------------- rows


def encrypted_fields() -> list[tuple[type[models.Model], tuple[str, ...]]]:
    """Every model with encrypted fields, and those fields' names."""
    from django.apps import apps

    found = []
    for model in apps.get_models():
        names = tuple(f.name for f in model._meta.concrete_fields
                      if isinstance(f, EncryptedTextField))
        if names:
            found.append((model, names))
    return found


def _raw(name: str) -> models.Expression:
    # A plain TextField output: the stored `fernet:` text, not decrypted.
    return models.ExpressionWrapper(models.F(name), output_field=models.TextField())


def raw_values(
    model: type[models.Model], names: tuple[str, ...], queryset: models.QuerySet | None = None
) -> Iterator[tuple[Any, str, str]]:
    """(pk, field name, stored text) of every non-empty secret of `model`."""
    qs = model._base_manager.all() if queryset is None else queryset
    for pk, *values in qs.order_by("pk").values_list("pk", *[_raw(n) for n in names]):
        for name, value in zip(names, values, strict=True):
            if value:
                yield pk, name, value


@dataclass
class SecretsReport:
    checked: int = 0
    unreadable: list[str] = field(default_factory=list)  # "account 3: api_key"


def verify_stored_secrets() -> SecretsReport:
    """Decrypt every stored secret of every model (tables not migrated yet are skipped).
    Raises ImproperlyConfigured for unusable key material, DatabaseError when the database
    cannot be read."""
    from django.db import connection

    report = SecretsReport()
    tables = set(connection.introspection.table_names())
    for model, names in encrypted_fields():
        if model._meta.db_table not in tables:
            continue
        for pk, name, value in raw_values(model, names):
            report.checked += 1
            try:
                decrypt(value)
            except SecretDecryptionError:
                report.unreadable.append(f"{model._meta.verbose_name} {pk}: {name}")
    return report


@dataclass
class RotationReport:
    rotated: int = 0  # secrets re-encrypted
    from_older_key: int = 0  # of which were under an older key
    keys: int = 0  # keys configured


def rotate_stored_secrets() -> RotationReport:
    """Re-encrypt every stored secret with the newest key, in one transaction (all or nothing).
    Raises SecretDecryptionError, changing nothing, if a secret cannot be decrypted."""
    from django.db import transaction

    report = RotationReport(keys=len(keyring().keys))
    with transaction.atomic():
        for model, names in encrypted_fields():
            locked = model._base_manager.select_for_update()
            updates: dict[Any, dict[str, str]] = {}
            for pk, name, value in raw_values(model, names, locked):
                try:
                    rotated, was_old = rotate(value)
                except SecretDecryptionError as exc:
                    raise SecretDecryptionError(
                        f"{model._meta.verbose_name} {pk}: {name}: {exc}") from None
                updates.setdefault(pk, {})[name] = rotated
                report.rotated += 1
                report.from_older_key += was_old
            for pk, values in updates.items():
                model._base_manager.filter(pk=pk).update(**{
                    # Value with a plain TextField: written as is, not encrypted again.
                    name: models.Value(value, output_field=models.TextField())
                    for name, value in values.items()
                })
    return report
