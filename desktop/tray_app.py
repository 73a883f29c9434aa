"""pystray glue: the menu and the icon loop for TrayController (tray.py)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from django.utils.translation import gettext as _

from desktop.icons import icon_image
from desktop.tray import (
    TrayController,
    instance_label,
    on_signal_quit,
    open_admin,
    quit_in_background,
    start_server,
    toggle_instance,
)

INSTALL_HINT = "pip install 'iflow2api[tray]'"


class TrayUnavailable(Exception):
    """No tray here: the extra is not installed, or there is no desktop session."""


def load_pystray() -> Any:
    try:
        import PIL.Image  # noqa: F401  (pystray needs it; say so before pystray does)
        import pystray
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in {"pystray", "PIL", "Xlib", "gi", "six"}:
            raise TrayUnavailable(_(
                "The tray icon needs the optional packages pystray and Pillow: "
                "%(command)s") % {"command": INSTALL_HINT}) from exc
        raise
    except Exception as exc:  # e.g. Xlib's DisplayNameError: no X server to talk to
        raise TrayUnavailable(_(
            "No system tray is available here (%(error)s). The tray needs a desktop session; "
            "`iflow2api serve` runs the server without one.") % {"error": exc}) from exc
    return pystray


class DockFailureFilter(logging.Filter):
    """pystray's X backend logs a traceback at every update while the desktop has no tray
    area; one plain warning says it better."""

    def __init__(self) -> None:
        super().__init__()
        self.told = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "Failed to dock icon":
            return True
        if self.told:
            return False
        self.told = True
        record.msg = _("No system tray area was found to show the icon in; the server runs "
                       "anyway (stop it with Ctrl+C or `kill %(pid)s`).") % {"pid": os.getpid()}
        record.args, record.exc_info, record.exc_text = (), None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _action(function: Callable[..., Any], *args: Any) -> Callable[[], None]:
    # pystray counts an action's parameters, so menu actions are closures without defaults.
    def run() -> None:
        function(*args)
    return run


def build_menu(ctl: TrayController, pystray: Any) -> Any:
    Menu, Item = pystray.Menu, pystray.MenuItem

    def checked(name: str) -> Callable[[Any], bool]:
        return lambda item: ctl.is_enabled(name)

    def instance_items() -> Iterator[Any]:
        if not ctl.rows:
            yield Item(_("No instances yet"), None, enabled=False)
            return
        alive = ctl.server_alive()
        for row in ctl.rows:
            yield Item(instance_label(row, alive), _action(toggle_instance, ctl, row.name),
                       checked=checked(row.name))

    return Menu(
        Item(_("Open admin"), _action(open_admin, ctl), default=True),
        Item(_("Instances (click to start or stop)"), Menu(instance_items)),
        Item(_("Start the server"), _action(start_server, ctl),
             visible=lambda item: not ctl.server_alive()),
        Menu.SEPARATOR,
        Item(_("Quit"), _action(quit_in_background, ctl)),
    )


def x_wake_up(icon: Any) -> Callable[[], None] | None:
    """pystray's X backend runs its loop in one thread and takes updates (title, picture,
    stop) from others as X messages; python-xlib can leave that loop asleep with such a message
    already read, or a request unsent, until more X traffic comes. A round trip is that
    traffic. None for other backends."""
    display = getattr(icon, "_display", None)
    if display is None or not hasattr(display, "sync"):
        return None
    return display.sync


def keep_awake(ctl: TrayController, wake: Callable[[], None], every: float = 0.5) -> None:
    while not ctl.loop_done.wait(every):
        try:
            wake()
        except Exception:  # the display went away: the loop is ending anyway
            return


def run_tray(ctl: TrayController, pystray: Any, *, on_ready: Callable[[], None]) -> None:
    """Starts the server, shows the icon and blocks until Quit (menu, SIGINT or SIGTERM)."""
    logging.getLogger("pystray._base").addFilter(DockFailureFilter())
    ctl.start_server()
    ctl.refresh()
    icon = pystray.Icon("iflow2api", icon_image(ctl.status), ctl.title or "iflow2api",
                        build_menu(ctl, pystray))
    ctl.icon = icon
    handler = on_signal_quit(ctl)
    signal.signal(signal.SIGINT, handler)
    if sys.platform != "win32":
        signal.signal(signal.SIGTERM, handler)

    ctl.wake_loop = x_wake_up(icon)

    def setup(icon: Any) -> None:
        icon.visible = True
        if ctl.wake_loop is not None:
            threading.Thread(target=keep_awake, args=(ctl, ctl.wake_loop), name="tray-x-wake",
                             daemon=True).start()
        threading.Thread(target=ctl.poll_forever, name="tray-status", daemon=True).start()
        on_ready()

    ctl.loop_thread = threading.current_thread()
    try:
        icon.run(setup=setup)
    finally:
        ctl.loop_done.set()
        ctl.stopping.set()
        ctl.stop_server()  # whatever ended the loop, the server does not outlive the tray
        ctl.close()
