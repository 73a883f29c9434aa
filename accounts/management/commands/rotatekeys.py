"""`iflow2api rotatekeys [--new-key]`: re-encrypt every stored secret with the newest key."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts import crypto
from iflow2api_lib.i18n import TranslatedHelp


class Command(TranslatedHelp, BaseCommand):
    help = gettext_lazy(
        "Re-encrypt every stored secret with the newest encryption key (the first of "
        "FIELD_ENCRYPTION_KEY, or the first line of the key file), in one transaction. "
        "Afterwards the older keys can be removed."
    )
    requires_system_checks: list[str] = []  # it reports unreadable secrets itself

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--new-key", action="store_true",
            help=_("generate a new key, put it first in the key file (older keys stay "
                   "readable), then rotate"))

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self._rotate(new_key=options["new_key"])
        except ImproperlyConfigured as exc:  # also SecretDecryptionError: nothing was changed
            raise CommandError(_("%(error)s. Nothing was re-encrypted.") % {"error": exc}
                               ) from None

    def _rotate(self, *, new_key: bool) -> None:
        if new_key:
            if crypto.keys_from_environment():
                raise CommandError(_(
                    "%(env)s is set, so the key file is not used and cannot take the new key. "
                    "Put a new key first instead (%(env)s=<new>,<old>; `iflow2api genkey` "
                    "prints one), restart, and run `iflow2api rotatekeys`.")
                    % {"env": crypto.ENV_NAME})
            report = crypto.verify_stored_secrets()  # never add a key on top of a broken one
            if report.unreadable:
                raise crypto.SecretDecryptionError(
                    _("%(count)d stored secrets cannot be decrypted (%(which)s) with "
                      "%(where)s") % {"count": len(report.unreadable),
                                      "which": ", ".join(report.unreadable[:5]),
                                      "where": crypto.where_keys_live()})
            path = crypto.prepend_key_to_file(crypto.new_key())
            self.stdout.write(_("Added a new key first in %(path)s (mode 0600).")
                              % {"path": path})
        result = crypto.rotate_stored_secrets()
        counts = {"count": result.rotated, "older": result.from_older_key}
        self.stdout.write(
            (_("Re-encrypted %(count)d secrets with the newest key, %(older)d of them were "
               "under an older key.") if result.from_older_key
             else _("Re-encrypted %(count)d secrets with the newest key.")) % counts)
        if result.keys > 1:
            where = (_("%(env)s (keep the first)") % {"env": crypto.ENV_NAME}
                     if crypto.keys_from_environment()
                     else _("%(path)s (keep the first line)") % {"path": crypto.key_file_path()})
            self.stdout.write(_(
                "Every secret is under the newest key now: the %(count)d older key(s) can be "
                "removed from %(where)s once every process using this database runs with the "
                "new key.") % {"count": result.keys - 1, "where": where})
