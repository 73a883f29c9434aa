"""`iflow2api genkey`: print a new Fernet key (for FIELD_ENCRYPTION_KEY=<new>,<old>)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.utils.translation import gettext_lazy

from accounts.crypto import new_key
from iflow2api_lib.i18n import TranslatedHelp


class Command(TranslatedHelp, BaseCommand):
    help = gettext_lazy("Print a new encryption key. Put it first in FIELD_ENCRYPTION_KEY "
                        "(FIELD_ENCRYPTION_KEY=<new>,<old>), restart, then run `iflow2api "
                        "rotatekeys`.")
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(new_key())
