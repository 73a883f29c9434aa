"""`iflow2api setprice MODEL --input 0.27 --cached-input 0.07 --output 1.10 --currency USD`:
a catalogue model's prices per million tokens (docs/costs.md); without options, shows them."""

from __future__ import annotations

import re
from argparse import ArgumentTypeError
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts.models import ModelInfo
from iflow2api_lib.i18n import TranslatedHelp

# option → field
PRICE_OPTIONS = {"input": "price_input", "cached_input": "price_cached_input",
                 "cache_write": "price_cache_write", "output": "price_output"}
LIMIT = Decimal("999999.999999")  # the fields' 12 digits, 6 of them decimals


def price(text: str) -> Decimal:
    """A price per million tokens: a non-negative decimal number with at most 6 decimals."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ArgumentTypeError(_("not a price: %(value)r (a number such as 0.27)")
                                % {"value": text}) from None
    if not value.is_finite() or value < 0 or value > LIMIT or value != round(value, 6):
        raise ArgumentTypeError(_("not a price: %(value)r (0 to 999999.999999, at most 6 "
                                  "decimals)") % {"value": text})
    return value


def describe(info: ModelInfo) -> str:
    def shown(value: Decimal | None) -> str:
        return _("not set") if value is None else f"{value.normalize():f}"

    if info.price_input is None or info.price_output is None:
        state = _("unpriced: its requests show \"cost unknown\"")
    else:
        state = _("priced")
    return _("%(model)s (%(state)s), per million tokens in %(currency)s: input %(input)s, "
             "cached input %(cached)s, cache write %(write)s, output %(output)s") % {
        "model": info.model_id, "state": state, "currency": info.price_currency,
        "input": shown(info.price_input), "cached": shown(info.price_cached_input),
        "write": shown(info.price_cache_write), "output": shown(info.price_output)}


class Command(TranslatedHelp, BaseCommand):
    help = gettext_lazy(
        "Set a catalogue model's prices per million tokens (input, cached input, cache write, "
        "output) and their currency; the request log and the usage page compute each "
        "request's cost from them. Without options it shows the model's prices; --clear "
        "removes them (cost unknown).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", help=_("the model id in the catalogue"))
        parser.add_argument("--input", type=price, help=_("per million input tokens"))
        parser.add_argument("--cached-input", type=price,
                            help=_("per million input tokens read from the prompt cache "
                                   "(default: the input price)"))
        parser.add_argument("--cache-write", type=price,
                            help=_("per million input tokens written to the prompt cache "
                                   "(default: the input price)"))
        parser.add_argument("--output", type=price, help=_("per million output tokens"))
        parser.add_argument("--currency", help=_("ISO 4217 code, e.g. USD or CNY"))
        parser.add_argument("--clear", action="store_true",
                            help=_("remove all of the model's prices"))

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["model"]
        info = (ModelInfo.objects.filter(model_id=name).first()
                or ModelInfo.objects.filter(model_id__iexact=name).first())
        if info is None:
            raise CommandError(_("no model %(model)r in the catalogue (the admin's Models page "
                                 "lists them)") % {"model": name})
        changed = []
        if options["clear"]:
            for field in PRICE_OPTIONS.values():
                setattr(info, field, None)
            changed = list(PRICE_OPTIONS.values())
        for option, field in PRICE_OPTIONS.items():
            if options[option] is not None:
                setattr(info, field, options[option])
                changed.append(field)
        if options["currency"] is not None:
            currency = options["currency"].strip().upper()
            if not re.fullmatch(r"[A-Z]{3}", currency):
                raise CommandError(_("not a currency code: %(value)r (three letters, e.g. USD)")
                                   % {"value": options["currency"]})
            info.price_currency = currency
            changed.append("price_currency")
        if changed:
            # A running server sees the new price within its routing snapshot's few seconds.
            info.save(update_fields=sorted(set(changed)))
        self.stdout.write(describe(info))
        if changed and (info.price_input is None) != (info.price_output is None):
            self.stderr.write(_("warning: a model needs both an input and an output price; "
                                "until then its cost is unknown"))
