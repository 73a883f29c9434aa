"""`iflow2api serve`: migrate, import accounts, then serve every enabled instance with Daphne."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from accounts.checks import ensure_secrets_readable
from accounts.importers import import_environment, import_iflow_settings
from accounts.logins import LoginError
from accounts.models import Account
from iflow2api_lib.i18n import TranslatedHelp
from instances.models import DEFAULT_INSTANCE, Instance
from instances.runtime import WILDCARDS, host_port
from instances.services import ensure_default_instance, import_environment_keys, usable_key_count
from instances.supervisor import Address, Supervisor, is_loopback

UNUSABLE = (Account.State.BLOCKED, Account.State.NEEDS_LOGIN)

log = logging.getLogger(__name__)


def url_host(host: str) -> str:
    if host in {"0.0.0.0", "::"}:
        return "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def lan_address(ipv6: bool = False) -> str | None:
    """This machine's address on its network (the source address of its default route), for a
    URL other machines can use; None without one. Connecting a UDP socket sends nothing."""
    family, probe = ((socket.AF_INET6, ("2001:db8::1", 9)) if ipv6
                     else (socket.AF_INET, ("192.0.2.1", 9)))  # documentation ranges
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(probe)
            address = sock.getsockname()[0]
    except OSError:
        return None
    return None if address in {"0.0.0.0", "::", "127.0.0.1", "::1"} else address


def upstream_hint(problem: str, add_page: str) -> str:
    """The start-up warning when nothing can be served, and the ways to add an upstream."""
    return "\n".join([
        "", "!! " + problem,
        "   " + _("Add one, e.g. an OpenAI-compatible API (the key is read from stdin):"),
        '     printf %s "$API_KEY" | iflow2api addaccount --label NAME \\',
        "       --base-url https://api.example.com/v1 --api-key - --models MODEL[,MODEL…]",
        "   " + _("or a local server (no key): iflow2api addaccount --label Ollama --base-url "
                  "http://127.0.0.1:11434/v1 --models qwen3:8b"),
        "   " + _("or in the admin: %(url)s") % {"url": add_page}, ""])


class Command(TranslatedHelp, BaseCommand):
    help = gettext_lazy("Migrate the database, then serve every enabled instance (the API and "
                        "the admin) with Daphne, each on its own host:port.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", help=_("serve the default instance on this interface "
                                             "instead of its own (env IFLOW2API_HOST)"))
        parser.add_argument("--port", type=int, help=_("serve the default instance on this "
                                                       "port instead of its own (env "
                                                       "IFLOW2API_PORT)"))
        parser.add_argument("--instance", action="append", metavar="NAME",
                            help=_("serve only this instance (repeatable); default: all "
                                   "enabled"))
        parser.add_argument("--no-migrate", action="store_true", help=_("skip `migrate`"))

    def handle(self, *args: Any, **options: Any) -> None:
        conf = settings.IFLOW2API
        if not options["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
        ensure_secrets_readable()  # a wrong FIELD_ENCRYPTION_KEY stops here, before serving
        self._import_accounts()
        default = ensure_default_instance(conf["HOST"], conf["PORT"])
        if not Instance.objects.filter(enabled=True).exists():
            # Every instance stopped from the admin: bring the default one back, or nothing
            # would listen and the admin itself could not be reached.
            Instance.objects.filter(pk=default.pk).update(enabled=True)
            self.stdout.write(_("No instance was enabled: enabling `%(name)s` (%(host)s:%(port)s) "
                                "so the admin can be reached.")
                              % {"name": default.name, "host": default.host, "port": default.port})
        import_environment_keys(default, conf["API_KEYS"])
        overrides: dict[str, Address] = {}
        host = options["host"] or (conf["HOST"] if "IFLOW2API_HOST" in os.environ else None)
        port = options["port"] or (conf["PORT"] if "IFLOW2API_PORT" in os.environ else None)
        if host or port:  # the default instance on an address given here, checked up front
            address = (host or default.host, port or default.port)
            if not is_loopback(address[0]) and usable_key_count(default) == 0:
                raise CommandError(_(
                    "refusing to serve on %(host)s: a non-loopback address needs client "
                    "keys, or anyone who reaches this port can spend your upstream quota. "
                    "Create one with `iflow2api createkey --instance default`, or set "
                    "IFLOW2API_API_KEYS=<key>[,<key>…] (clients send it as "
                    "`Authorization: Bearer`).") % {"host": address[0]})
            self._check_port(*address)
            overrides[DEFAULT_INSTANCE] = address
        self._admin_hint()
        self.upstream_problem = self._upstream_problem()
        self._run(overrides, frozenset(options["instance"]) if options["instance"] else None)

    def _run(self, overrides: dict[str, Address], only: frozenset[str] | None) -> None:
        from twisted.internet import reactor

        from iflow2api_site.asgi import application, runtime
        from iflow2api_site.server import DrainingServer
        from iflow2api_site.tuning import tune_for_serving

        # Our own lines keep the command line's language; the server itself starts with none
        # active, so the API answers in English unless a request asks (Accept-Language).
        self.language = translation.get_language()
        translation.deactivate()

        server = DrainingServer(
            application=application,
            lifecycle=runtime.lifecycle,
            endpoints=[],  # the supervisor opens one listener per instance
            signal_handlers=False,  # ours: SIGTERM drains instead of cutting streams
            verbosity=0,
            ready_callable=lambda: asyncio.ensure_future(start()),
            application_close_timeout=10,
        )
        supervisor = Supervisor(server.open_listener, server.close_listener,
                                overrides=overrides, only=only, on_change=self._state_changed,
                                active=lambda: server.draining is None,
                                listeners=runtime.listeners, directory=runtime.directory)

        async def start() -> None:
            # First: a SIGTERM while the listeners open must drain, not kill.
            server.install_signal_handlers(settings.IFLOW2API["SHUTDOWN_GRACE_SECONDS"])
            await supervisor.reconcile()
            tune_for_serving()  # after start-up, before the first request
            self._banner(supervisor)
            if not settings.REDIS_URL:  # with Redis, Celery beat and a worker refresh tokens
                runtime.start_refresh_scheduler()  # an asyncio task on Daphne's loop
            await supervisor.run()

        reactor.addSystemEventTrigger("before", "shutdown", supervisor.mark_stopped)
        server.run()

    def _banner(self, supervisor: Supervisor) -> None:
        with translation.override(getattr(self, "language", None)):
            self.stdout.write(self._banner_text(supervisor))
        self.stdout.flush()

    def _banner_text(self, supervisor: Supervisor) -> str:
        lines, first = [], ""
        for pk, ((host, port), _listener) in sorted(supervisor.listening.items(),
                                                     key=lambda item: item[1][0][1]):
            name = supervisor.names.get(pk, str(pk))
            base = f"http://{url_host(host)}:{port}"
            head = (_("iflow2api serving on %(url)s") if name == DEFAULT_INSTANCE
                    else _("iflow2api serving on %(url)s  (instance %(name)s)"))
            head %= {"url": base, "name": name}
            api = base  # the admin and docs stay on `base`: pages answer loopback names only
            if host in WILDCARDS:  # bound to every interface: say so, and how others reach it
                lan = lan_address(ipv6=":" in host)
                head = (_("iflow2api listening on %(address)s, every interface%(instance)s")
                        % {"address": host_port(host, port),
                           "instance": "" if name == DEFAULT_INSTANCE else f" ({name})"})
                head += "\n  " + _("this machine: %(url)s") % {"url": base}
                if lan:
                    api = f"http://{url_host(lan)}:{port}"
                    head += "\n  " + _("other machines: %(url)s (or this machine's name)") % {
                        "url": api}
            first = first or base
            lines.append(
                head + "\n"
                f"  {_('OpenAI API:'):<15} {api}/v1   (chat/completions, models)\n"
                f"  {_('Anthropic API:'):<15} {api}      (ANTHROPIC_BASE_URL; /v1/messages)\n"
                f"  {_('Admin:'):<15} {base}/admin/\n"
                f"  {_('API docs:'):<15} {base}/docs")
        if not lines:
            lines.append(_("iflow2api: no instance is listening (enable one in the admin, "
                           "Instances); waiting for changes."))
        elif getattr(self, "upstream_problem", ""):
            lines.append(upstream_hint(self.upstream_problem,
                                       f"{first}/admin/accounts/account/add/"))
        return "\n".join(lines) + "\n" + _("Press Ctrl+C to stop.")

    def _upstream_problem(self) -> str:
        """Why no upstream account can serve anything, or "": every model request would be
        refused until one is added (the running server picks a new one up by itself)."""
        accounts = Account.objects.all()
        if accounts.filter(enabled=True).exclude(state__in=UNUSABLE).exists():
            return ""
        count = accounts.count()
        why = (_("No upstream account is configured: every model request is refused until one "
                 "is added.") if not count else
               ngettext("No usable upstream account: the only one is disabled, blocked or needs "
                        "a login (the admin's Accounts page says why).",
                        "No usable upstream account: all %(count)d are disabled, blocked or need "
                        "a login (the admin's Accounts page says why).", count)
               % {"count": count})
        return why

    def _state_changed(self, name: str, state: str, message: str) -> None:
        if state == "error":
            with translation.override(getattr(self, "language", None)):
                self.stderr.write(_("instance %(name)s: %(message)s")
                                  % {"name": name, "message": message})
        else:
            log.info("instance %s: %s", name, state)

    def _import_accounts(self) -> None:
        conf = settings.IFLOW2API
        if conf["IMPORT_IFLOW_SETTINGS"]:
            account = import_iflow_settings(conf["IFLOW_SETTINGS_DIR"])
            if account:
                self.stdout.write(_("iFlow account from %(where)s: %(label)s")
                                  % {"where": conf["IFLOW_SETTINGS_DIR"],
                                     "label": account.label})
        try:
            imported = import_environment()
        except LoginError as exc:  # a misconfigured container says so instead of serving
            raise CommandError(_("cannot import the upstream account from the environment: "
                                 "%(reason)s") % {"reason": exc.message}) from exc
        for account in imported:
            self.stdout.write(_("account from the environment: %(label)s")
                              % {"label": account.label})

    def _check_port(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host.strip("[]"), port))
            except OSError as exc:
                raise CommandError(_("cannot listen on %(host)s:%(port)s: %(reason)s")
                                   % {"host": host, "port": port, "reason": exc.strerror}
                                   ) from exc

    def _admin_hint(self) -> None:
        if not get_user_model().objects.filter(is_superuser=True).exists():
            self.stdout.write(_(
                "No admin user yet. Create one with:  iflow2api createsuperuser\n"
                "(non-interactive: DJANGO_SUPERUSER_USERNAME=… DJANGO_SUPERUSER_PASSWORD=… "
                "DJANGO_SUPERUSER_EMAIL=… iflow2api createsuperuser --noinput)"
            ))
