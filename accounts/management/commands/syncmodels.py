"""`iflow2api syncmodels [--account ID …]`: the model catalogue from the upstreams' /models."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts.sync import sync_models
from iflow2api_lib.i18n import TranslatedHelp


class Command(TranslatedHelp, BaseCommand):
    help = gettext_lazy(
        "List the models of every enabled OpenAI-compatible account (GET {base}/models) and "
        "add the new ones to the catalogue, linked to the account. Models that disappeared "
        "upstream are reported, not changed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--account", type=int, action="append", dest="accounts",
                            metavar="ID",
                            help=_("only this account (repeatable; also a disabled one)"))

    def handle(self, *args: Any, **options: Any) -> None:
        # async_to_sync, not asyncio.run: the database work stays on this thread.
        report = async_to_sync(sync_models)(options["accounts"])
        for line in report.skipped:
            self.stderr.write(_("skipped %(what)s") % {"what": line})
        if not report.accounts:
            if report.skipped:
                raise CommandError(_("nothing to sync"))
            self.stdout.write(_("No enabled OpenAI-compatible account to sync."))
            return
        for item in report.accounts:
            (self.stdout if item.ok else self.stderr).write(item.summary())
        self.stdout.write(report.summary())
        if report.failed:
            raise CommandError(_("%(count)d account(s) could not be synced")
                               % {"count": len(report.failed)})
