"""`iflow2api autostart enable|disable|status`: start the server (or the tray) at login."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from desktop import split_passthrough
from desktop.autostart import (
    KEPT_VARIABLES,
    Backend,
    Installed,
    SystemdUser,
    backends,
    launch_for,
)
from desktop.formats import Launch
from iflow2api_lib.i18n import TranslatedHelp


def masked(arg: str) -> str:
    """NAME=value with the value hidden unless it is a kept path: --env may carry secrets."""
    name, sep, _value = arg.partition("=")
    if sep and name.isidentifier() and name.upper() == name and name not in KEPT_VARIABLES:
        return f"{name}=…"
    return arg


def shown_command(args: list[str]) -> str:
    return shlex.join([masked(a) for a in args])


class Command(TranslatedHelp, BaseCommand):
    help = gettext_lazy(
        "Start iflow2api when you log in: enable, disable or show the autostart entry. "
        "Options after `--` are passed to the started command, e.g. "
        "`autostart enable -- --port 28001`.")
    requires_system_checks: list[str] = []  # no database or URL work: start fast

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parse = parser.parse_args

        def parse_args(args: Any = None, namespace: Any = None) -> Any:
            own, passthrough = split_passthrough(list(sys.argv[2:] if args is None else args))
            options = parse(own, namespace)
            options.passthrough = passthrough
            return options

        parser.parse_args = parse_args  # type: ignore[method-assign]
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["enable", "disable", "status"])
        parser.add_argument("--tray", action="store_true",
                            help=_("start the tray icon (which starts the server) instead of "
                                   "the server alone"))
        parser.add_argument("--systemd", action="store_true",
                            help=_("Linux: a systemd user unit (restarts the server if it "
                                   "crashes) instead of an XDG autostart entry"))
        parser.add_argument("--env", action="append", default=[], metavar="NAME",
                            help=_("also keep this environment variable's current value in the "
                                   "entry (repeatable; IFLOW2API_HOME is always kept)"))

    def handle(self, *args: Any, **options: Any) -> None:
        available = backends()
        action = options["action"]
        if action == "status":
            self.status(available)
        elif action == "disable":
            self.disable(available)
        else:
            self.enable(available, options)

    def enable(self, available: list[Backend], options: dict[str, Any]) -> None:
        if options["systemd"] and not any(isinstance(b, SystemdUser) for b in available):
            raise CommandError(_("--systemd is for Linux only"))
        chosen = next((b for b in available if isinstance(b, SystemdUser)), None) \
            if options["systemd"] else available[0]
        assert chosen is not None
        launch = launch_for(tray=options["tray"], extra_args=options.get("passthrough", []))
        extra = []
        for name in options["env"]:
            if name not in os.environ:
                raise CommandError(_("--env %(name)s: the variable is not set") % {"name": name})
            if all(name != kept for kept, _value in launch.env):
                extra.append((name, os.environ[name]))
        launch = Launch(launch.python, launch.args, (*launch.env, *extra))

        for other in available:  # one way to start is enough: two would fight for the port
            found = other.installed() if other is not chosen else None
            if found is not None:
                other.remove()
                self.stdout.write(_("Removed the %(label)s at %(where)s.")
                                  % {"label": other.label, "where": found.where})
        was = chosen.installed()
        where = chosen.install(launch)
        message = (_("Autostart updated: %(label)s at %(where)s") if was
                   else _("Autostart enabled: %(label)s at %(where)s"))
        self.stdout.write(message % {"label": chosen.label, "where": where})
        self.stdout.write(_("At login it runs: %(command)s") % {"command": shown_command(
            [*(f"{n}={v}" for n, v in launch.env), *launch.argv])})
        if isinstance(chosen, SystemdUser):
            if chosen.reload():
                self.stdout.write(_("systemd has read the unit. To start it now: "
                                    "systemctl --user start iflow2api"))
            else:
                self.stdout.write(_("No running systemd user manager was found: the unit is "
                                    "read at your next login."))
        else:
            self.stdout.write(_("It starts at your next login."))

    def disable(self, available: list[Backend]) -> None:
        removed = False
        for backend in available:
            found = backend.installed()
            if backend.remove():
                removed = True
                where = found.where if found else backend.label
                self.stdout.write(_("Removed the %(label)s at %(where)s.")
                                  % {"label": backend.label, "where": where})
                if isinstance(backend, SystemdUser):
                    backend.reload()
        if removed:
            self.stdout.write(_("Autostart disabled. A server that is running now keeps "
                                "running until you stop it."))
        else:
            self.stdout.write(_("Autostart was not enabled; nothing to remove."))

    def status(self, available: list[Backend]) -> None:
        any_installed = False
        for backend in available:
            found = backend.installed()
            if found is None:
                self.stdout.write(_("%(label)s: not installed") % {"label": backend.label})
                continue
            any_installed = True
            self.stdout.write(_("%(label)s: enabled") % {"label": backend.label})
            self._describe(backend, found)
        if not any_installed:
            self.stdout.write(_("Autostart is off. Turn it on with: iflow2api autostart enable"))

    def _describe(self, backend: Backend, found: Installed) -> None:
        self.stdout.write("  " + _("where: %(where)s") % {"where": found.where})
        self.stdout.write("  " + _("runs:  %(command)s")
                          % {"command": shown_command(found.command)})
        if isinstance(backend, SystemdUser) and backend.enabled_link() is None:
            self.stdout.write("  " + _("warning: the unit is not enabled (no WantedBy link); "
                                       "run `iflow2api autostart enable --systemd` again"))
        program = found.program
        if program and not Path(program).exists():
            self.stdout.write("  " + _("warning: %(program)s no longer exists; run "
                                       "`iflow2api autostart enable` again from the Python "
                                       "environment iflow2api is installed in")
                              % {"program": program})
