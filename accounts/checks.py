"""A wrong encryption key fails loudly: a system check (every management command, `serve`
included) and `ensure_secrets_readable()` that `serve` calls after migrating."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.db import DatabaseError
from django.utils.translation import gettext as _

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
        fix = _("Set %(env)s to the key they were written with (several keys: comma "
                "separated, newest first), or unset it to use the key file %(file)s.")
    else:
        fix = _("Restore the key file %(file)s (one key a line, newest first), or set "
                "%(env)s=<key>[,<older key>…] to the key they were written with.")
    fix = fix % {"env": ENV_NAME, "file": key_file_path()}
    return _("Keys come from %(where)s. %(fix)s Nothing is sent upstream until then.") % {
        "where": where_keys_live(), "fix": fix}


def secrets_errors() -> list[checks.CheckMessage]:
    try:
        report = verify_stored_secrets()
    except ImproperlyConfigured as exc:  # unusable key material
        return [checks.Error(_("the encryption keys are unusable: %(error)s") % {"error": exc},
                             hint=_hint(), id="accounts.E001")]
    except DatabaseError:
        return []  # no database (yet): nothing stored to check; other commands will say why
    if not report.unreadable:
        return []
    shown = ", ".join(report.unreadable[:SHOWN])
    if len(report.unreadable) > SHOWN:
        shown = _("%(shown)s and %(more)d more") % {"shown": shown,
                                                     "more": len(report.unreadable) - SHOWN}
    return [checks.Error(
        _("%(count)d of %(checked)d stored secrets cannot be decrypted with the configured "
          "encryption keys (%(shown)s): the key is not the one they were written with")
        % {"count": len(report.unreadable), "checked": report.checked, "shown": shown},
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
