"""`iflow2api tray`: the server with a status icon in the system tray (optional extra
`iflow2api[tray]`). Options it does not know are passed to `serve`."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from desktop import split_passthrough
from desktop.tray import POLL_SECONDS, TrayController
from iflow2api_lib.i18n import TranslatedHelp


class Command(TranslatedHelp, BaseCommand):
    requires_system_checks: list[str] = []  # no database or URL work: start fast
    help = gettext_lazy(
        "Run the server with a tray icon: green while it serves, red on an error, grey when "
        "stopped; its menu opens the admin and starts or stops instances. Other options (or "
        "those after `--`) are passed to `serve`, e.g. `iflow2api tray --port 28001`.")

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)

        def parse_args(args: Any = None, namespace: Any = None) -> Any:
            own, after = split_passthrough(list(sys.argv[2:] if args is None else args))
            options, unknown = parser.parse_known_args(own, namespace)
            options.serve_args = [*unknown, *after]
            return options

        parser.parse_args = parse_args  # type: ignore[method-assign]
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--poll", type=float, default=POLL_SECONDS, metavar="SECONDS",
                            help=_("how often the icon re-reads the instances (default 3)"))

    def handle(self, *args: Any, **options: Any) -> None:
        from desktop.tray_app import TrayUnavailable, load_pystray, run_tray

        try:
            pystray = load_pystray()
        except TrayUnavailable as exc:
            raise CommandError(str(exc)) from exc
        ctl = TrayController(options.get("serve_args", []), poll_seconds=options["poll"])

        def ready() -> None:
            self.stdout.write(_("Tray icon shown; the server runs as: %(command)s")
                              % {"command": " ".join(ctl.command[1:])})
            self.stdout.flush()

        run_tray(ctl, pystray, on_ready=ready)
        self.stdout.write(_("Tray closed; the server has stopped."))
