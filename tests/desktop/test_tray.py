"""The tray: its pictures, its status rules and menu actions (no display needed), the server
it runs, and `iflow2api tray` for real under Xvfb with this test playing the system tray."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from desktop.icons import COLOURS, ERROR, RUNNING, STOPPED, icon_image
from desktop.tray import (
    InstanceRow,
    TrayController,
    admin_url,
    default_address,
    instance_label,
    open_admin,
    overall_status,
    quit_tray,
    toggle_instance,
    with_default_address,
)
from instances.models import Instance
from tests.servers import ROOT, free_port

XVFB = "/usr/bin/Xvfb"
# Found, not imported: importing pystray needs a display.
HAVE_PYSTRAY = all(importlib.util.find_spec(m) for m in ("pystray", "PIL", "Xlib"))
needs_pystray = pytest.mark.skipif(
    not HAVE_PYSTRAY, reason="pystray, Pillow or python-xlib is missing: "
    "pip install 'iflow2api[tray]' (the test extra has them)")
needs_pillow = pytest.mark.skipif(not importlib.util.find_spec("PIL"),
                                  reason="Pillow (the optional [tray] extra) is not installed")


def row(name: str = "default", state: str = "running", **fields: object) -> InstanceRow:
    values = {"host": "127.0.0.1", "port": 28000, "enabled": True, "message": ""} | fields
    return InstanceRow(name=name, state=state, **values)  # type: ignore[arg-type]


def server_env(home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "IFLOW2API_HOST",
                        "IFLOW2API_PORT", "IFLOW2API_API_KEYS"}}
    env.update(IFLOW2API_HOME=home, IMPORT_IFLOW_SETTINGS="0", PYTHONUNBUFFERED="1")
    return env


def accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


# --- pictures and rules ----------------------------------------------------------------------

@needs_pillow
@pytest.mark.parametrize("status", [RUNNING, ERROR, STOPPED])
@pytest.mark.parametrize("size", [16, 64])
def test_icon_is_a_disc_of_the_status_colour_with_a_white_i(status: str, size: int):
    image = icon_image(status, size)
    assert image.size == (size, size) and image.mode == "RGBA"
    assert image.getpixel((0, 0))[3] == 0  # transparent outside the disc
    assert image.getpixel((size // 4, size // 2)) == (*COLOURS[status], 255)
    assert image.getpixel((size // 2, int(size * 0.6))) == (255, 255, 255, 255)
    assert COLOURS[RUNNING][1] > COLOURS[RUNNING][0]  # green
    assert COLOURS[ERROR][0] > COLOURS[ERROR][1]  # red
    assert len(set(COLOURS[STOPPED])) == 1  # grey


def test_overall_status():
    assert overall_status(True, False, [row()]) == RUNNING
    assert overall_status(True, False, []) == RUNNING
    assert overall_status(True, False, [row(), row("b", "error", port=2)]) == ERROR
    assert overall_status(False, False, [row("b", "error")]) == STOPPED  # old rows, no server
    assert overall_status(False, True, [row()]) == ERROR  # the server died by itself


def test_admin_url_and_the_default_address():
    assert admin_url([]) == "http://127.0.0.1:28000/admin/"
    assert admin_url([row("other", port=1), row(port=28123)]) == "http://127.0.0.1:28123/admin/"
    assert admin_url([row(host="0.0.0.0")]) == "http://127.0.0.1:28000/admin/"
    assert admin_url([row(host="::1", port=5)]) == "http://[::1]:5/admin/"
    assert default_address(["--port", "9"], {}) == (None, 9)
    assert default_address(["--host=::1", "--port=7"], {"IFLOW2API_PORT": "5"}) == ("::1", 7)
    assert default_address([], {"IFLOW2API_HOST": "h", "IFLOW2API_PORT": "5"}) == ("h", 5)
    assert default_address(["--port"], {}) == (None, None)
    moved = with_default_address([row(), row("b", port=2)], (None, 9))
    assert [r.port for r in moved] == [9, 2]
    assert admin_url(moved) == "http://127.0.0.1:9/admin/"
    assert admin_url([], (None, 9)) == "http://127.0.0.1:9/admin/"


def test_instance_labels():
    assert instance_label(row(state="error"), alive=True) == "default (127.0.0.1:28000) — error"
    # With the server gone, whatever the rows last said, nothing listens.
    assert instance_label(row(), alive=False) == "default (127.0.0.1:28000) — stopped"


# --- menu actions against the database --------------------------------------------------------

@pytest.mark.django_db
def test_toggle_instance_flips_enabled_in_the_database():
    Instance.objects.create(name="default", port=28000)
    work = Instance.objects.create(name="work", port=28001, enabled=True)
    before = work.updated_at
    ctl = TrayController(env={})
    assert toggle_instance(ctl, "work") is False
    work.refresh_from_db()
    assert work.enabled is False and work.updated_at > before
    assert ctl.is_enabled("work") is False and ctl.is_enabled("default") is True
    assert toggle_instance(ctl, "work") is True
    assert Instance.objects.get(name="work").enabled is True
    assert toggle_instance(ctl, "no-such-instance") is None


@pytest.mark.django_db
def test_refresh_and_open_admin_read_the_instances():
    Instance.objects.create(name="default", host="0.0.0.0", port=28555)
    Instance.objects.filter(name="default").update(state="error", state_message="port in use")
    opened: list[str] = []
    ctl = TrayController(env={}, open_url=opened.append)
    assert ctl.refresh() == STOPPED  # no server started: grey, whatever the row says
    assert ctl.title == "iflow2api: stopped"
    assert [(r.name, r.state, r.message) for r in ctl.rows] == [
        ("default", "error", "port in use")]
    assert open_admin(ctl) == "http://127.0.0.1:28555/admin/"
    assert opened == ["http://127.0.0.1:28555/admin/"]
    ctl = TrayController(["--port", "28999"], env={}, open_url=opened.append)
    assert open_admin(ctl) == "http://127.0.0.1:28999/admin/"  # serve's --port wins
    assert quit_tray(ctl) is None  # nothing was started: nothing to stop


@needs_pystray
@pytest.mark.django_db
def test_the_menu_binds_the_actions(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PYSTRAY_BACKEND", "dummy")  # menus are the same on every backend
    pystray = importlib.import_module("pystray")
    from desktop.tray_app import build_menu

    Instance.objects.create(name="default", port=28000)
    Instance.objects.create(name="work", port=28001, enabled=False)
    opened: list[str] = []
    ctl = TrayController(env={}, open_url=opened.append)
    ctl.refresh()
    items = list(build_menu(ctl, pystray).items)
    assert [i.text for i in items] == [
        "Open admin", "Instances (click to start or stop)", "Start the server", "- - - -", "Quit"]
    assert [i.text for i in items if i.default] == ["Open admin"]
    items[0](None)
    assert opened == ["http://127.0.0.1:28000/admin/"]
    assert items[2].visible  # no server running: offer to start it

    instances = list(items[1].submenu.items)
    assert [(i.text, i.checked) for i in instances] == [
        ("default (127.0.0.1:28000) — stopped", True), ("work (127.0.0.1:28001) — stopped", False)]
    instances[1](None)  # click "work": enabled, for the server to start within seconds
    assert Instance.objects.get(name="work").enabled is True
    assert list(items[1].submenu.items)[1].checked is True

    Instance.objects.all().delete()
    ctl.refresh()
    (empty,) = items[1].submenu.items
    assert empty.text == "No instances yet" and not empty.enabled


# --- the server it runs -----------------------------------------------------------------------

def test_controller_runs_serve_and_quit_stops_it():
    port = free_port()
    ctl = TrayController(["--port", str(port)],
                         env=server_env(tempfile.mkdtemp(prefix="iflow2api-tray-")))
    ctl.start_server()
    try:
        deadline = time.monotonic() + 40
        while not accepts(port):
            assert ctl.server_alive(), "serve exited"
            assert time.monotonic() < deadline, "serve did not listen"
            time.sleep(0.2)
        ctl.start_server()  # already running: no second server
        assert ctl.server_alive() and not ctl.server_crashed()
        # SIGTERM: serve drains and exits 0, or, in the instant between its first listener
        # and its signal handlers, ends by the signal's default action.
        assert quit_tray(ctl) in (0, -signal.SIGTERM)
        assert not ctl.server_alive() and not accepts(port)
        assert not ctl.server_crashed()  # stopped on request: not an error
    finally:
        ctl.stop_server(timeout=5)


def test_controller_reports_a_server_that_dies():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ctl = TrayController(["--port", str(port)],
                             env=server_env(tempfile.mkdtemp(prefix="iflow2api-tray-")))
        ctl.start_server()
        ctl.server.wait(40)  # type: ignore[union-attr]
    assert ctl.server_crashed()
    assert overall_status(ctl.server_alive(), ctl.server_crashed(), []) == ERROR
    assert ctl.describe(ERROR, False, []) == "iflow2api: the server stopped (exit code 1)"


# --- `iflow2api tray` as a user runs it --------------------------------------------------------

def run_tray_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iflow2api_site.cli", "tray", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_without_pystray_it_says_what_to_install(tmp_path: Path):
    # None in sys.modules is how Python marks a module that cannot be imported.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['pystray'] = None\n")
    env = server_env(str(tmp_path / "home")) | {"PYTHONPATH": str(tmp_path)}
    result = run_tray_command(env)
    assert result.returncode != 0
    assert "pip install 'iflow2api[tray]'" in result.stderr
    assert "Traceback" not in result.stderr


@needs_pystray
def test_without_a_display_it_says_so(tmp_path: Path):
    env = server_env(str(tmp_path)) | {"PYSTRAY_BACKEND": "xorg"}
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    result = run_tray_command(env)
    assert result.returncode != 0
    assert "No system tray is available here" in result.stderr
    assert "Traceback" not in result.stderr


@contextlib.contextmanager
def xvfb() -> Iterator[str]:
    read_fd, write_fd = os.pipe()
    process = subprocess.Popen([XVFB, "-displayfd", str(write_fd), "-screen", "0", "320x240x24",
                                "-nolisten", "tcp"], pass_fds=(write_fd,),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        ready, _w, _x = select.select([read_fd], [], [], 20)
        number = os.read(read_fd, 16).decode().strip() if ready else ""
        if not number:
            pytest.skip("Xvfb did not start")
        yield f":{number}"
    finally:
        os.close(read_fd)
        process.terminate()
        process.wait(10)


class TrayArea:
    """A minimal system tray (the XEMBED systray protocol's manager side): owns the tray
    selection, takes the icon window it is asked to dock, and shows it at 32x32."""

    SIZE = 32

    def __init__(self, display_name: str) -> None:
        from Xlib import X, display

        self.X = X
        self.display = display.Display(display_name)
        screen = self.display.screen()
        self.window = screen.root.create_window(0, 0, 64, 64, 0, screen.root_depth,
                                                event_mask=X.SubstructureNotifyMask)
        self.window.map()
        self.opcode = self.display.intern_atom("_NET_SYSTEM_TRAY_OPCODE")
        screen_number = self.display.get_default_screen()
        selection = self.display.intern_atom(f"_NET_SYSTEM_TRAY_S{screen_number}")
        self.window.set_selection_owner(selection, X.CurrentTime)
        self.display.sync()
        self.icon = None

    def wait_for_dock(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.icon is None and time.monotonic() < deadline:
            while self.display.pending_events():
                event = self.display.next_event()
                if (event.type == self.X.ClientMessage and event.client_type == self.opcode
                        and event.data[1][1] == 0):  # SYSTEM_TRAY_REQUEST_DOCK
                    self.icon = self.display.create_resource_object("window", event.data[1][2])
                    self.icon.reparent(self.window, 0, 0)
                    self.icon.configure(width=self.SIZE, height=self.SIZE)
                    self.icon.map()
                    self.display.sync()
            time.sleep(0.05)
        assert self.icon is not None, "the tray icon never asked to be docked"

    def drain(self) -> None:
        while self.display.pending_events():
            self.display.next_event()

    def title(self) -> str:
        self.drain()
        name = self.icon.get_wm_name()  # type: ignore[union-attr]
        return name.decode() if isinstance(name, bytes) else str(name or "")

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        self.drain()
        image = self.icon.get_image(0, 0, self.SIZE, self.SIZE,  # type: ignore[union-attr]
                                    self.X.ZPixmap, 0xFFFFFFFF)
        offset = (y * self.SIZE + x) * 4  # 24-bit TrueColor: B, G, R, unused
        blue, green, red = image.data[offset:offset + 3]
        return red, green, blue

    def click(self) -> None:
        from Xlib.protocol import event

        press = event.ButtonPress(time=self.X.CurrentTime, root=self.display.screen().root,
                                  window=self.icon, same_screen=1, child=self.X.NONE,
                                  root_x=0, root_y=0, event_x=4, event_y=4, state=0, detail=1)
        self.icon.send_event(press)  # type: ignore[union-attr]
        self.display.sync()

    def close(self) -> None:
        self.display.close()


def near(colour: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 12 for a, b in zip(colour, expected, strict=True))


def wait_until(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def tray_env(home: Path, display: str, opened: Path) -> dict[str, str]:
    browser = home / "browser"
    browser.write_text(f"#!/bin/sh\necho \"$1\" >> '{opened}'\n")
    browser.chmod(0o755)
    return server_env(str(home / "data")) | {
        "DISPLAY": display, "PYSTRAY_BACKEND": "xorg", "BROWSER": str(browser)}


def start_tray(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "iflow2api_site.cli", "tray", "--poll", "0.5",
                             *args], cwd=ROOT, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)


needs_x = pytest.mark.skipif(not Path(XVFB).exists(), reason=f"{XVFB} is not installed "
                             "(apt-get install xvfb)")


@needs_x
@needs_pystray
def test_tray_under_xvfb_shows_green_opens_the_admin_and_quits_cleanly(tmp_path: Path):
    port = free_port()
    opened = tmp_path / "opened.txt"
    log = tmp_path / "tray.log"
    with xvfb() as display:
        area = TrayArea(display)
        tray = start_tray(tray_env(tmp_path, display, opened), log, "--port", str(port))
        try:
            area.wait_for_dock(timeout=40)
            wait_until(lambda: accepts(port), 40, "the server the tray started")
            wait_until(lambda: "running, 1 instance listening" in area.title(), 20,
                       "the running title")
            wait_until(lambda: near(area.pixel(6, 16), COLOURS[RUNNING]), 10, "a green icon")

            area.click()  # a left click is the default action: open the admin
            wait_until(opened.exists, 10, "the browser")
            assert opened.read_text().split() == [f"http://127.0.0.1:{port}/admin/"]

            tray.send_signal(signal.SIGINT)  # Ctrl+C: the same quit as the menu's
            assert tray.wait(40) == 0, log.read_text()
            assert not accepts(port), "the server outlived the tray"
            output = log.read_text()
            assert "Tray icon shown" in output and "Tray closed" in output
            assert "Traceback" not in output
        finally:
            if tray.poll() is None:
                tray.kill()
            area.close()


@needs_x
@needs_pystray
def test_tray_under_xvfb_turns_red_when_the_server_fails(tmp_path: Path):
    log = tmp_path / "tray.log"
    with xvfb() as display, socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        area = TrayArea(display)
        tray = start_tray(tray_env(tmp_path, display, tmp_path / "opened"), log, "--port",
                          str(port))
        try:
            area.wait_for_dock(timeout=40)
            wait_until(lambda: "exit code 1" in area.title(), 40, "the failure in the title")
            wait_until(lambda: near(area.pixel(6, 16), COLOURS[ERROR]), 10, "a red icon")
            assert tray.poll() is None  # the tray stays to say so
            tray.send_signal(signal.SIGTERM)
            assert tray.wait(30) == 0, log.read_text()
        finally:
            if tray.poll() is None:
                tray.kill()
            area.close()
