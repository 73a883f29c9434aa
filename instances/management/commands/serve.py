"""`iflow2api serve`: migrate, import accounts, then serve the API and the admin with Daphne."""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.checks import ensure_secrets_readable
from accounts.importers import import_environment, import_iflow_settings

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host in {"localhost", "ip6-localhost"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    if host in {"0.0.0.0", "::"}:
        return "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class Command(BaseCommand):
    help = "Migrate the database, then serve the API and the admin (Daphne)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.IFLOW2API.get("HOST", "127.0.0.1"),
                            help="interface to bind (default 127.0.0.1; env IFLOW2API_HOST)")
        parser.add_argument("--port", type=int, default=settings.IFLOW2API.get("PORT", 28000),
                            help="port (default 28000; env IFLOW2API_PORT)")
        parser.add_argument("--no-migrate", action="store_true", help="skip `migrate`")

    def handle(self, *args: Any, **options: Any) -> None:
        host: str = options["host"]
        port: int = options["port"]
        if not is_loopback(host) and not settings.IFLOW2API["API_KEYS"]:
            raise CommandError(
                f"refusing to serve on {host}: a non-loopback address needs client keys, or "
                "anyone who reaches this port can spend your upstream quota. Set "
                "IFLOW2API_API_KEYS=<key>[,<key>…] (clients send it as `Authorization: Bearer`)."
            )
        if not options["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
        ensure_secrets_readable()  # a wrong FIELD_ENCRYPTION_KEY stops here, before serving
        self._import_accounts()
        self._check_port(host, port)
        self._admin_hint()

        from daphne.endpoints import build_endpoint_description_strings

        from iflow2api_site.asgi import application
        from iflow2api_site.server import DrainingServer

        base = f"http://{url_host(host)}:{port}"

        def ready() -> None:
            self.stdout.write(
                f"iflow2api serving on {base}\n"
                f"  OpenAI API:     {base}/v1   (chat/completions, models)\n"
                f"  Anthropic API:  {base}      (ANTHROPIC_BASE_URL; /v1/messages)\n"
                f"  Admin:          {base}/admin/\n"
                f"  API docs:       {base}/docs\n"
                "Press Ctrl+C to stop."
            )
            self.stdout.flush()
            server.install_signal_handlers(settings.IFLOW2API["SHUTDOWN_GRACE_SECONDS"])
            if not settings.REDIS_URL:  # with Redis, Celery beat and a worker refresh tokens
                from accounts.scheduler import start as start_refresh_scheduler

                start_refresh_scheduler()  # an asyncio task on Daphne's loop

        server = DrainingServer(
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            signal_handlers=False,  # ours: SIGTERM drains instead of cutting streams
            verbosity=0,
            ready_callable=ready,
            application_close_timeout=10,
        )
        server.run()

    def _import_accounts(self) -> None:
        conf = settings.IFLOW2API
        if conf["IMPORT_IFLOW_SETTINGS"]:
            account = import_iflow_settings(conf["IFLOW_SETTINGS_DIR"])
            if account:
                self.stdout.write(f"iFlow account from {conf['IFLOW_SETTINGS_DIR']}: "
                                  f"{account.label}")
        for account in import_environment():
            self.stdout.write(f"account from the environment: {account.label}")

    def _check_port(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host.strip("[]"), port))
            except OSError as exc:
                raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc

    def _admin_hint(self) -> None:
        if not get_user_model().objects.filter(is_superuser=True).exists():
            self.stdout.write(
                "No admin user yet. Create one with:  iflow2api createsuperuser\n"
                "(non-interactive: DJANGO_SUPERUSER_USERNAME=… DJANGO_SUPERUSER_PASSWORD=… "
                "DJANGO_SUPERUSER_EMAIL=… iflow2api createsuperuser --noinput)"
            )
