"""`iflow2api rotatekeys [--new-key]`: re-encrypt every stored secret with the newest key."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import crypto


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret with the newest encryption key (the first of "
        "FIELD_ENCRYPTION_KEY, or the first line of the key file), in one transaction. "
        "Afterwards the older keys can be removed."
    )
    requires_system_checks: list[str] = []  # it reports unreadable secrets itself

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--new-key", action="store_true",
            help="generate a new key, put it first in the key file (older keys stay readable), "
                 "then rotate")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self._rotate(new_key=options["new_key"])
        except ImproperlyConfigured as exc:  # also SecretDecryptionError: nothing was changed
            raise CommandError(f"{exc}. Nothing was re-encrypted.") from None

    def _rotate(self, *, new_key: bool) -> None:
        if new_key:
            if crypto.keys_from_environment():
                raise CommandError(
                    f"{crypto.ENV_NAME} is set, so the key file is not used and cannot take the "
                    f"new key. Put a new key first instead ({crypto.ENV_NAME}=<new>,<old>; "
                    "`iflow2api genkey` prints one), restart, and run `iflow2api rotatekeys`.")
            report = crypto.verify_stored_secrets()  # never add a key on top of a broken one
            if report.unreadable:
                raise crypto.SecretDecryptionError(
                    f"{len(report.unreadable)} stored secrets cannot be decrypted "
                    f"({', '.join(report.unreadable[:5])}) with {crypto.where_keys_live()}")
            path = crypto.prepend_key_to_file(crypto.new_key())
            self.stdout.write(f"Added a new key first in {path} (mode 0600).")
        result = crypto.rotate_stored_secrets()
        older = f", {result.from_older_key} of them were under an older key" \
            if result.from_older_key else ""
        self.stdout.write(f"Re-encrypted {result.rotated} secrets with the newest key{older}.")
        if result.keys > 1:
            where = (f"{crypto.ENV_NAME} (keep the first)" if crypto.keys_from_environment()
                     else f"{crypto.key_file_path()} (keep the first line)")
            self.stdout.write(
                f"Every secret is under the newest key now: the {result.keys - 1} older key(s) "
                f"can be removed from {where} once every process using this database runs "
                "with the new key.")
