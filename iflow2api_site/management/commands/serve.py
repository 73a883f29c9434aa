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
from django.utils.translation import gettext_lazy

from accounts.checks import ensure_secrets_readable
from accounts.importers import import_environment, import_iflow_settings
from iflow2api_lib.i18n import TranslatedHelp
from instances.models import DEFAULT_INSTANCE, Instance
from instances.services import ensure_default_instance, import_environment_keys, usable_key_count
from instances.supervisor import Address, Supervisor, is_loopback

log = logging.getLogger(__name__)


def url_host(host: str) -> str:
    if host in {"0.0.0.0", "::"}:
        return "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


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
                                active=lambda: server.draining is None)

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
        lines = []
        for pk, ((host, port), _listener) in sorted(supervisor.listening.items(),
                                                     key=lambda item: item[1][0][1]):
            name = supervisor.names.get(pk, str(pk))
            base = f"http://{url_host(host)}:{port}"
            head = (_("iflow2api serving on %(url)s") if name == DEFAULT_INSTANCE
                    else _("iflow2api serving on %(url)s  (instance %(name)s)"))
            lines.append(
                head % {"url": base, "name": name} + "\n"
                f"  {_('OpenAI API:'):<15} {base}/v1   (chat/completions, models)\n"
                f"  {_('Anthropic API:'):<15} {base}      (ANTHROPIC_BASE_URL; /v1/messages)\n"
                f"  {_('Admin:'):<15} {base}/admin/\n"
                f"  {_('API docs:'):<15} {base}/docs")
        if not lines:
            lines.append(_("iflow2api: no instance is listening (enable one in the admin, "
                           "Instances); waiting for changes."))
        return "\n".join(lines) + "\n" + _("Press Ctrl+C to stop.")

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
        for account in import_environment():
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
