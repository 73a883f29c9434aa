"""`iflow2api addaccount`: add an upstream account from a base URL and an API key.

Prints the new account's id on stdout (for scripts) and a summary on stderr; the key is never
printed (`--api-key -` reads it from stdin, which keeps it out of the shell history).
"""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts.logins import LoginError, add_api_key_account, anthropic_settings, mask_secret
from accounts.management.commands.iflow_login import read_secret
from accounts.models import AuthHeader, BetaPolicy, Provider
from accounts.presets import PRESETS
from iflow2api_lib.i18n import TranslatedHelp

# The Anthropic-compatible account's options (argparse dest -> Account field).
OPTIONS = {"auth_header": "auth_header", "beta_policy": "beta_policy",
           "allow_betas": "beta_allowlist", "anthropic_version": "anthropic_version"}


class Command(TranslatedHelp, BaseCommand):
    help = gettext_lazy("Add an upstream account (OpenAI-compatible, Anthropic-compatible or "
                        "iFlow) with an API key.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--provider", choices=Provider.values, default=Provider.OPENAI,
                            help=_("openai (any OpenAI-compatible API, default), anthropic "
                                   "(any Anthropic Messages-compatible API) or iflow"))
        parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                            help=_("an Anthropic-compatible vendor: sets --provider anthropic, "
                                   "the base URL, the key header and the beta policy"))
        parser.add_argument("--auth-header", choices=AuthHeader.values, default=None,
                            help=_("anthropic: send the key as x-api-key (default) or "
                                   "Authorization: Bearer"))
        parser.add_argument("--beta-policy", choices=BetaPolicy.values, default=None,
                            help=_("anthropic: forward, drop (default) or allow the client's "
                                   "anthropic-beta values"))
        parser.add_argument("--allow-betas", default=None,
                            help=_("anthropic: comma-separated betas forwarded under "
                                   "--beta-policy allow"))
        parser.add_argument("--anthropic-version", default=None,
                            help=_("anthropic: sent when the client sends none (default "
                                   "2023-06-01)"))
        parser.add_argument("--label", required=True, help=_("a name for the admin"))
        parser.add_argument("--base-url", default="",
                            help=_("e.g. https://api.deepseek.com/v1 (default: the "
                                   "provider's)"))
        parser.add_argument("--api-key", default="",
                            help=_("the key; `-` reads it from stdin; omit for a server "
                                   "without keys"))
        parser.add_argument("--models", default="",
                            help=_("comma-separated model ids this account serves (added to "
                                   "the catalogue when missing)"))
        parser.add_argument("--no-migrate", action="store_true", help=_("skip `migrate`"))

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
        # The preset and the Anthropic options, checked before the key is asked for; explicit
        # options win over the preset.
        given = {field: options[option] for option, field in OPTIONS.items()}
        names = {field: "--" + option.replace("_", "-") for option, field in OPTIONS.items()}
        try:
            provider, base_url, extra = anthropic_settings(
                options["provider"], options["base_url"], options["preset"], given, names,
                "--provider anthropic")
        except LoginError as exc:
            raise CommandError(exc.message) from exc
        api_key = options["api_key"]
        if api_key == "-":
            api_key = read_secret(_("API key: "))
        models = [m.strip() for m in options["models"].split(",") if m.strip()]
        try:
            account = add_api_key_account(provider, options["label"], base_url, api_key,
                                          models, **extra)
        except LoginError as exc:
            raise CommandError(exc.message) from exc
        key = mask_secret(account.api_key) if account.api_key else _("none")
        details = {"provider": account.get_provider_display(), "id": account.pk,
                   "label": account.label, "url": account.base_url, "key": key,
                   "models": ", ".join(models)}
        self.stderr.write(
            (_("Added %(provider)s account #%(id)s “%(label)s” (%(url)s, key %(key)s, models "
               "%(models)s)") if models else
             _("Added %(provider)s account #%(id)s “%(label)s” (%(url)s, key %(key)s)"))
            % details)
        self.stdout.write(str(account.pk))
