"""`iflow2api createkey --instance NAME [--name LABEL]`: a new client API key, shown once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from iflow2api_lib.i18n import TranslatedHelp
from instances.models import DEFAULT_INSTANCE, ClientKey, Instance
from instances.services import ensure_default_instance


def parse_expiry(value: str) -> timezone.datetime:
    """`30d`, `12h` or an ISO date-time."""
    unit = value[-1:].lower()
    if unit in {"d", "h"} and value[:-1].isdigit() and int(value[:-1]) > 0:
        amount = int(value[:-1])
        return timezone.now() + (timedelta(days=amount) if unit == "d" else timedelta(hours=amount))
    moment = parse_datetime(value)
    if moment is None:
        raise CommandError(_("--expires takes a positive 30d or 12h, or an ISO date-time, not "
                             "%(value)r")
                           % {"value": value})
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


class Command(TranslatedHelp, BaseCommand):
    help = gettext_lazy("Create a client API key for an instance. The key is printed once, "
                        "alone on the last line; only its hash is stored.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--instance", default=DEFAULT_INSTANCE,
                            help=_("the instance the key is for (default: default)"))
        parser.add_argument("--name", default="", help=_("a label for the key (who uses it)"))
        parser.add_argument("--expires", help=_("30d, 12h or an ISO date-time; default: never"))
        parser.add_argument("--models", default="",
                            help=_("comma-separated models the key may use; default: all"))
        parser.add_argument("--no-migrate", action="store_true", help=_("skip `migrate`"))

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
        name = options["instance"]
        if name == DEFAULT_INSTANCE:
            conf = settings.IFLOW2API
            instance = ensure_default_instance(conf["HOST"], conf["PORT"])
        else:
            instance = Instance.objects.filter(name=name).first()
            if instance is None:
                known = ", ".join(Instance.objects.values_list("name", flat=True)) or "-"
                raise CommandError(_("no instance named %(name)r (instances: %(known)s)")
                                   % {"name": name, "known": known})
        expires = parse_expiry(options["expires"]) if options["expires"] else None
        row, key = ClientKey.create(instance, options["name"], expires_at=expires,
                                    allowed_models=options["models"])
        label = f"{row.name} ({row.prefix}…)" if row.name else f"{row.prefix}…"
        self.stdout.write(_("Created the key %(label)s for the instance %(instance)s. It is "
                            "shown only now: store it safely.")
                          % {"label": label, "instance": instance.name})
        self.stdout.write(key)
