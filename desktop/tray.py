"""The tray icon's brain, without pystray: it runs `iflow2api serve` in a subprocess, reads
the instances from the database every few seconds, and decides what the icon shows.

The menu actions are plain functions taking the controller, so they are tested without a
display; tray_app.py binds them to pystray. No HTTP here: the server's health is whether its
process is alive and what each instance's row says (the server writes `state`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import webbrowser
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from desktop.icons import ERROR, RUNNING, STOPPED, icon_image
from instances.models import DEFAULT_INSTANCE, Instance

log = logging.getLogger(__name__)

POLL_SECONDS = 3.0
TITLE_LIMIT = 120  # Windows cuts tooltips at 128 characters
Address = tuple[str | None, int | None]


@dataclass(frozen=True)
class InstanceRow:
    name: str
    host: str
    port: int
    enabled: bool
    state: str
    message: str = ""


def overall_status(alive: bool, crashed: bool, rows: Sequence[InstanceRow]) -> str:
    """Red when the server died on its own or an instance failed; green while it serves."""
    if crashed or (alive and any(r.state == Instance.State.ERROR for r in rows)):
        return ERROR
    return RUNNING if alive else STOPPED


def url_host(host: str) -> str:
    if host in {"", "0.0.0.0"}:
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def default_address(serve_args: Sequence[str], environ: Mapping[str, str]) -> Address:
    """Where `serve` puts the default instance instead of its stored address, as it decides:
    --host/--port, else IFLOW2API_HOST/IFLOW2API_PORT when set."""
    host = environ.get("IFLOW2API_HOST") or None
    port_text = environ.get("IFLOW2API_PORT") or None
    args = list(serve_args)
    for i, arg in enumerate(args):
        for name in ("--host", "--port"):
            if arg == name and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
            else:
                continue
            if name == "--host":
                host = value
            else:
                port_text = value
    try:
        port = int(port_text) if port_text else None
    except ValueError:
        port = None
    return host, port


def with_default_address(rows: list[InstanceRow], address: Address) -> list[InstanceRow]:
    host, port = address
    return [replace(r, host=host or r.host, port=port or r.port)
            if r.name == DEFAULT_INSTANCE else r for r in rows]


def admin_url(rows: Sequence[InstanceRow], address: Address = (None, None)) -> str:
    default = next((r for r in rows if r.name == DEFAULT_INSTANCE), None)
    host, port = (default.host, default.port) if default else ("127.0.0.1", 28000)
    host, port = address[0] or host, address[1] or port
    return f"http://{url_host(host)}:{port}/admin/"


def read_instances() -> list[InstanceRow]:
    """Every instance, as the server last described it; empty until the first migrate."""
    try:
        return [InstanceRow(*values) for values in Instance.objects.order_by("port").values_list(
            "name", "host", "port", "enabled", "state", "state_message")]
    except DatabaseError:
        return []
    finally:
        # This runs on the tray's own threads, outside any request cycle: a connection left
        # open would be held for the tray's life (and be broken after a database restart).
        if not connection.in_atomic_block:
            connection.close()


class TrayController:
    def __init__(self, serve_args: Sequence[str] = (), *, python: str | None = None,
                 env: dict[str, str] | None = None, poll_seconds: float = POLL_SECONDS,
                 open_url: Callable[[str], Any] = webbrowser.open) -> None:
        self.command = [python or sys.executable, "-m", "iflow2api_site.cli", "serve",
                        *serve_args]
        self.env = env
        self.default_address = default_address(serve_args, os.environ if env is None else env)
        self.poll_seconds = poll_seconds
        self.open_url = open_url
        self.server: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.rows: list[InstanceRow] = []
        self.status = STOPPED
        self.title = ""
        self.icon: Any = None  # the pystray icon, once shown
        self.loop_thread: threading.Thread | None = None  # the thread in icon.run()
        self.loop_done = threading.Event()
        self.wake_loop: Callable[[], None] | None = None  # see tray_app.x_wake_up
        self._asked_to_stop = False
        self._log: IO[bytes] | None = None

    # --- the server process ---------------------------------------------------------------

    def start_server(self) -> None:
        with self.lock:
            if self.server_alive() or self.stopping.is_set():
                return
            output = self._output()
            self._asked_to_stop = False
            self.server = subprocess.Popen(self.command, env=self.env, stdout=output,
                                           stderr=subprocess.STDOUT if output else None)

    def _output(self) -> IO[bytes] | None:
        # Started from a terminal, the server prints there; under pythonw (no console) or a
        # closed stdout it writes a log file in IFLOW2API_HOME instead.
        try:
            if sys.stdout is not None and sys.stdout.fileno() >= 0:
                return None
        except (OSError, ValueError, AttributeError):
            pass
        if self._log is None:
            # Held open for the server's life, closed by close().
            self._log = Path(settings.HOME_DIR, "iflow2api.log").open("ab")  # noqa: SIM115
        return self._log

    def server_alive(self) -> bool:
        return self.server is not None and self.server.poll() is None

    def server_crashed(self) -> bool:
        """The server ended without being asked to, with a failure code."""
        return (self.server is not None and not self._asked_to_stop
                and self.server.poll() not in (None, 0))

    def stop_server(self, timeout: float | None = None) -> int | None:
        """SIGTERM (the server drains its streams), then a kill if it takes too long."""
        with self.lock:
            server = self.server
            if server is None:
                return None
            self._asked_to_stop = True
            if server.poll() is None:
                if sys.platform == "win32":
                    server.terminate()
                else:
                    server.send_signal(signal.SIGTERM)
                grace = settings.IFLOW2API["SHUTDOWN_GRACE_SECONDS"] + 5
                try:
                    server.wait(grace if timeout is None else timeout)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            return server.returncode

    # --- what the icon shows ----------------------------------------------------------------

    def rows_now(self) -> list[InstanceRow]:
        return with_default_address(read_instances(), self.default_address)

    def refresh(self) -> str:
        rows = self.rows_now()
        alive = self.server_alive()
        status = overall_status(alive, self.server_crashed(), rows)
        title = self.describe(status, alive, rows)
        changed_rows = rows != self.rows
        changed_look = (status, title) != (self.status, self.title)
        self.rows, self.status, self.title = rows, status, title
        icon = self.icon
        if icon is not None:
            if changed_look:
                icon.icon = icon_image(status)
                icon.title = title
            if changed_rows or changed_look:
                icon.update_menu()  # labels and check marks follow the rows
        return status

    def describe(self, status: str, alive: bool, rows: Sequence[InstanceRow]) -> str:
        if not alive:
            code = self.server.poll() if self.server is not None else None
            text = (_("iflow2api: the server stopped (exit code %(code)s)") % {"code": code}
                    if status == ERROR else _("iflow2api: stopped"))
        elif status == ERROR:
            failed = next(r for r in rows if r.state == Instance.State.ERROR)
            text = _("iflow2api: %(name)s failed: %(message)s") % {
                "name": failed.name, "message": failed.message or _("error")}
        else:
            listening = sum(1 for r in rows if r.state == Instance.State.RUNNING)
            text = ngettext("iflow2api: running, %(count)d instance listening",
                            "iflow2api: running, %(count)d instances listening",
                            listening) % {"count": listening}
        return text if len(text) <= TITLE_LIMIT else text[:TITLE_LIMIT - 1] + "…"

    def admin_url(self) -> str:
        return admin_url(self.rows or self.rows_now(), self.default_address)

    def is_enabled(self, name: str) -> bool:
        return any(r.enabled for r in self.rows if r.name == name)

    def poll_forever(self) -> None:
        """The tray's status thread: refresh now, then every poll_seconds until quit."""
        while not self.stopping.is_set():
            try:
                self.refresh()
            except Exception:  # a bad poll must not kill the thread that keeps the icon true
                log.exception("tray refresh failed")
            self.stopping.wait(self.poll_seconds)

    def wait_for_icon_loop(self, timeout: float = 5.0) -> bool:
        """After icon.stop(): until icon.run() has returned (wake_loop, if the backend needs
        it, is called between waits)."""
        if self.loop_thread is None or self.loop_thread is threading.current_thread():
            return self.loop_done.is_set()
        for _attempt in range(max(1, int(timeout / 0.25))):
            if self.loop_done.wait(0.25):
                return True
            if self.wake_loop is not None:
                with contextlib.suppress(Exception):
                    self.wake_loop()
        return self.loop_done.is_set()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def instance_label(row: InstanceRow, alive: bool) -> str:
    state = row.state if alive else Instance.State.STOPPED
    labels = {Instance.State.RUNNING: _("running"), Instance.State.ERROR: _("error"),
              Instance.State.STOPPED: _("stopped")}
    return f"{row.name} ({url_host(row.host)}:{row.port}) — {labels.get(state, state)}"


# --- menu actions -----------------------------------------------------------------------------

def open_admin(ctl: TrayController) -> str:
    url = ctl.admin_url()
    ctl.open_url(url)
    return url


def toggle_instance(ctl: TrayController, name: str) -> bool | None:
    """Flips `enabled`; the running server starts or stops that listener within seconds."""
    try:
        instance = Instance.objects.filter(name=name).first()
        if instance is None:
            return None
        instance.enabled = not instance.enabled
        instance.save(update_fields=["enabled", "updated_at"])
        enabled = instance.enabled
    finally:
        if not connection.in_atomic_block:
            connection.close()
    ctl.refresh()
    return enabled


def start_server(ctl: TrayController) -> None:
    ctl.start_server()
    ctl.refresh()


def quit_tray(ctl: TrayController) -> int | None:
    """Stops the server this tray started, then the icon (which ends `iflow2api tray`)."""
    ctl.stopping.set()
    code = ctl.stop_server()
    if ctl.icon is not None:
        ctl.icon.stop()
        ctl.wait_for_icon_loop()
    ctl.close()
    return code


def quit_in_background(ctl: TrayController) -> threading.Thread:
    """Quit without blocking the caller: the menu's thread must not wait for the server to
    drain, and a signal handler must return for the icon loop (in its thread) to finish."""
    worker = threading.Thread(target=quit_tray, args=(ctl,), name="tray-quit", daemon=True)
    worker.start()
    return worker


def on_signal_quit(ctl: TrayController) -> Callable[[int, Any], None]:
    """A SIGINT/SIGTERM handler: quits from another thread (the icon loop runs in this one)."""
    def handler(signum: int, frame: Any) -> None:
        quit_in_background(ctl)
    return handler
