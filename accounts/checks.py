"""A wrong encryption key fails loudly: a system check (every management command, `serve`
included) and `ensure_secrets_readable()` that `serve` calls after migrating."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.db import DatabaseError

from accounts.crypto import (
    ENV_NAME,
    key_file_path,
    keys_from_environment,
    verify_stored_secrets,
    where_keys_live,
)

SHOWN = 5


def _hint() -> str:
    if keys_from_environment():
        fix = (f"Set {ENV_NAME} to the key they were written with (several keys: comma "
               f"separated, newest first), or unset it to use the key file {key_file_path()}.")
    else:
        fix = (f"Restore the key file {key_file_path()} (one key a line, newest first), or set "
               f"{ENV_NAME}=<key>[,<older key>…] to the key they were written with.")
    return f"Keys come from {where_keys_live()}. {fix} Nothing is sent upstream until then."


def secrets_errors() -> list[checks.CheckMessage]:
    try:
        report = verify_stored_secrets()
    except ImproperlyConfigured as exc:  # unusable key material
        return [checks.Error(f"the encryption keys are unusable: {exc}", hint=_hint(),
                             id="accounts.E001")]
    except DatabaseError:
        return []  # no database (yet): nothing stored to check; other commands will say why
    if not report.unreadable:
        return []
    shown = ", ".join(report.unreadable[:SHOWN])
    more = f" and {len(report.unreadable) - SHOWN} more" if len(report.unreadable) > SHOWN else ""
    return [checks.Error(
        f"{len(report.unreadable)} of {report.checked} stored secrets cannot be decrypted with "
        f"the configured encryption keys ({shown}{more}): the key is not the one they were "
        "written with",
        hint=_hint(), id="accounts.E002",
    )]


def check_stored_secrets(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if app_configs is not None and not any(c.name == "accounts" for c in app_configs):
        return []
    return secrets_errors()


def ensure_secrets_readable() -> None:
    """CommandError (a clear message, no traceback) unless every stored secret decrypts."""
    errors = secrets_errors()
    if errors:
        raise CommandError("\n".join(f"{e.msg}.\n{e.hint}" for e in errors))
