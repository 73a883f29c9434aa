"""`iflow2api iflow_login`: log in to iFlow from a terminal and save the account.

- default: print the authorize URL and wait for the browser on a loopback callback
  (http://127.0.0.1:PORT/oauth2callback) — for a browser on this machine;
- `--paste`: print the URL, then read the URL the browser landed on from stdin — for a server in
  a container or on another host;
- `--cookie BXAUTH` (`--cookie -` reads it from stdin): the platform.iflow.cn cookie login.

Prints the account (label, email, masked key), never a token, key or cookie.
"""

from __future__ import annotations

import getpass
import html
import queue
import sys
import threading
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts.logins import (
    LoginError,
    add_cookie_account,
    callback_url,
    finish_oauth_login,
    mask_secret,
    start_oauth_login,
)
from accounts.models import Account, Provider
from iflow2api_lib.i18n import TranslatedHelp

CALLBACK_PATH = "/oauth2callback"


def read_secret(prompt: str) -> str:
    """One line from stdin: hidden when typed at a terminal, as-is when piped."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().strip()


class _Listener:
    """A one-shot HTTP listener on 127.0.0.1 for iFlow's redirect back to the terminal."""

    def __init__(self, port: int, state: str) -> None:
        self.state = state
        self.language = translation.get_language()  # the handler thread answers in it
        self.received: queue.Queue[str] = queue.Queue()
        self.result: tuple[bool, str] | None = None
        self.done = threading.Event()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(parts.query).items()}
                with translation.override(listener.language):
                    if parts.path != CALLBACK_PATH:
                        return self._answer(404, _("Not found."))
                    if params.get("state") != listener.state:
                        return self._answer(400, _("This is not the login this command "
                                                   "started."))
                    listener.received.put(self.path)
                    listener.done.wait(120)
                    ok, message = listener.result or (False, _("The login did not finish."))
                    return self._answer(200 if ok else 400, message)

            def _answer(self, status: int, message: str) -> None:
                body = (f"<!doctype html><meta charset=utf-8><title>iflow2api</title>"
                        f"<p>{html.escape(message)}</p>").encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

        try:
            self.server = HTTPServer(("127.0.0.1", port), Handler)
        except OSError as exc:
            raise CommandError(_("cannot listen on %(host)s:%(port)s: %(reason)s")
                               % {"host": "127.0.0.1", "port": port, "reason": exc.strerror}
                               ) from exc
        self.server.daemon_threads = True  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{CALLBACK_PATH}"

    def __enter__(self) -> _Listener:
        self.thread.start()
        return self

    def finish(self, ok: bool, message: str) -> None:
        self.result = (ok, message)
        self.done.set()

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Command(TranslatedHelp, BaseCommand):
    help = gettext_lazy("Log in to iFlow and save the account: OAuth in a browser (loopback "
                        "callback, or --paste the URL you land on), or --cookie with a "
                        "platform.iflow.cn BXAuth cookie.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--paste", action="store_true",
                            help=_("read the URL the browser lands on from stdin instead of "
                                   "listening on a loopback port"))
        parser.add_argument("--port", type=int, default=0,
                            help=_("loopback callback port (default: a free one)"))
        parser.add_argument("--timeout", type=float, default=300.0,
                            help=_("seconds to wait for the browser (default 300)"))
        parser.add_argument("--redirect", default="",
                            help=_("with --paste: the callback URL to send the browser to "
                                   "(default: this server's /accounts/oauth/callback/, from "
                                   "PUBLIC_BASE_URL or IFLOW2API_HOST/PORT)"))
        parser.add_argument("--cookie", metavar="BXAUTH",
                            help=_("cookie login with this BXAuth value; `-` reads it from "
                                   "stdin (keeps it out of the shell history)"))
        parser.add_argument("--account", type=int, metavar="ID",
                            help=_("log this iFlow account in again instead of adding one"))
        parser.add_argument("--open", action="store_true",
                            help=_("also open the URL in this machine's browser"))
        parser.add_argument("--no-migrate", action="store_true", help=_("skip `migrate`"))

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
        target = None
        if options["account"] is not None:
            target = Account.objects.filter(pk=options["account"],
                                            provider=Provider.IFLOW).first()
            if target is None:
                raise CommandError(_("no iFlow account with id %(id)s")
                                   % {"id": options["account"]})
        try:
            if options["cookie"] is not None:
                account = self._cookie(options["cookie"], target)
            elif options["paste"]:
                account = self._paste(options, target)
            else:
                account = self._loopback(options, target)
        except LoginError as exc:
            raise CommandError(exc.message) from exc
        self._report(account)

    def _say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def _show_url(self, url: str, open_browser: bool) -> None:
        self._say(_("Open this URL in a browser and log in to iFlow:") + f"\n\n  {url}\n")
        if open_browser:
            webbrowser.open(url)

    def _cookie(self, value: str, target: Account | None) -> Account:
        if value == "-":
            value = read_secret(_("BXAuth cookie: "))
        if not value.strip():
            raise CommandError(_("no BXAuth cookie given"))
        return add_cookie_account(value, account=target)

    def _paste(self, options: dict[str, Any], target: Account | None) -> Account:
        redirect = options["redirect"] or callback_url()
        _login, url = start_oauth_login(redirect, target)
        self._show_url(url, options["open"])
        self._say(_("After you approve, the browser goes to %(url)s (that page may fail to "
                    "load: that is fine).\nCopy the whole address from the address bar and "
                    "paste it here, then press Enter:") % {"url": redirect})
        pasted = sys.stdin.readline().strip()
        if not pasted:
            raise CommandError(_("no URL pasted"))
        return finish_oauth_login(pasted)

    def _loopback(self, options: dict[str, Any], target: Account | None) -> Account:
        timeout = options["timeout"]
        # Bind first: the redirect must carry the real port, in the authorize URL and the
        # token exchange alike (start_oauth_login stores it with the state).
        with _Listener(options["port"], state="") as listener:
            login, url = start_oauth_login(listener.url, target)
            listener.state = login.state
            self._show_url(url, options["open"])
            self._say(_("Waiting for the browser on %(url)s (up to %(timeout)s s; Ctrl+C to "
                        "stop). On another machine or in a container, use --paste.")
                      % {"url": listener.url, "timeout": f"{timeout:g}"})
            try:
                path = listener.received.get(timeout=timeout)
            except queue.Empty:
                raise CommandError(_("no login within %(timeout)s s; try again, or use "
                                     "--paste") % {"timeout": f"{timeout:g}"}) from None
            try:
                account = finish_oauth_login(path)
            except LoginError as exc:
                listener.finish(False, _("Login failed: %(reason)s") % {"reason": exc.message})
                raise
            except Exception:
                listener.finish(False, _("Login failed; see the terminal."))
                raise
            who = account.email or account.phone or account.label
            # The browser gets this answer before the listener shuts down (__exit__ waits).
            listener.finish(True, _("Logged in as %(who)s. You can close this tab.")
                            % {"who": who})
        return account

    def _report(self, account: Account) -> None:
        lines = [_("Saved iFlow account #%(id)s “%(label)s”")
                 % {"id": account.pk, "label": account.label}]
        if account.email or account.phone:
            lines.append("  " + _("user:  %(user)s") % {"user": account.email or account.phone})
        lines.append("  " + _("key:   %(key)s") % {"key": mask_secret(account.api_key)})
        if account.api_key_expires_at:
            lines.append("  " + _("key valid until %(time)s UTC")
                         % {"time": f"{account.api_key_expires_at:%Y-%m-%d %H:%M}"})
        if account.access_token_expires_at:
            lines.append("  " + _("token valid until %(time)s UTC (refreshed automatically)")
                         % {"time": f"{account.access_token_expires_at:%Y-%m-%d %H:%M}"})
        self._say("\n".join(lines))
