"""`iflow2api autostart`: the real command against a throw-away HOME on Linux, and the macOS
plist and Windows Run value from their pure functions (exact content)."""

from __future__ import annotations

import os
import plistlib
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from desktop.autostart import (
    LaunchAgent,
    RegistryRun,
    SystemdUser,
    XdgAutostart,
    backends,
    launch_for,
)
from desktop.formats import (
    Launch,
    desktop_entry,
    desktop_exec_quote,
    launchd_plist,
    parse_desktop_exec,
    parse_systemd_exec,
    pythonw_for,
    split_windows_command,
    systemd_quote,
    systemd_unit,
    windows_command,
)
from tests.servers import ROOT, free_port

PY = sys.executable
CLI = f"{PY} -m iflow2api_site.cli"
AWKWARD = ['/opt/my apps/py"thon', "50% off", "$HOME", "back\\slash", "tab\there", "it's"]


def run(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real management command, with HOME (and so ~/.config) in a temp dir."""
    base = {k: v for k, v in os.environ.items()
            if k not in {"XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS",
                         "DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    base.update(HOME=str(home), IFLOW2API_HOME=str(home / "data"), IMPORT_IFLOW_SETTINGS="0")
    base.update(env)
    return subprocess.run([PY, "-m", "iflow2api_site.cli", "autostart", *args], cwd=ROOT,
                          env=base, capture_output=True, text=True, timeout=60)


# --- Linux, for real -------------------------------------------------------------------------

def test_enable_status_disable_with_xdg_autostart(tmp_path: Path):
    entry = tmp_path / ".config/autostart/iflow2api.desktop"
    assert "Autostart is off" in run(tmp_path, "status").stdout

    enabled = run(tmp_path, "enable")
    assert enabled.returncode == 0, enabled.stderr
    assert f"Autostart enabled: XDG autostart at {entry}" in enabled.stdout
    assert entry.read_text() == (
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Name=iflow2api\n"
        "Comment=OpenAI- and Anthropic-compatible API gateway\n"
        f"Exec=env IFLOW2API_HOME={tmp_path}/data {CLI} serve\n"
        "Terminal=false\n"
        "NoDisplay=true\n"
        "X-GNOME-Autostart-enabled=true\n"
    )
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600

    status = run(tmp_path, "status").stdout
    assert "XDG autostart: enabled" in status
    assert f"runs:  env IFLOW2API_HOME={tmp_path}/data {CLI} serve" in status
    assert "systemd user unit: not installed" in status
    assert "warning" not in status

    again = run(tmp_path, "enable")  # idempotent: the same entry, said to be updated
    assert "Autostart updated" in again.stdout
    assert len(list(entry.parent.iterdir())) == 1

    disabled = run(tmp_path, "disable")
    assert f"Removed the XDG autostart at {entry}." in disabled.stdout
    assert not entry.exists()
    assert "nothing to remove" in run(tmp_path, "disable").stdout
    assert "Autostart is off" in run(tmp_path, "status").stdout


def test_the_desktop_entry_really_starts_the_server(tmp_path: Path):
    """Run the Exec line as a session would: the server answers on the passed-through port
    and keeps its data in the IFLOW2API_HOME that was kept."""
    port = free_port()
    assert run(tmp_path, "enable", "--", "--port", str(port)).returncode == 0
    entry = tmp_path / ".config/autostart/iflow2api.desktop"
    if shutil.which("desktop-file-validate"):
        checked = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True,
                                 text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    exec_line = next(line[5:] for line in entry.read_text().splitlines()
                     if line.startswith("Exec="))
    argv = parse_desktop_exec(exec_line)
    assert argv == ["env", f"IFLOW2API_HOME={tmp_path}/data", PY, "-m", "iflow2api_site.cli",
                    "serve", "--port", str(port)]
    env = {k: v for k, v in os.environ.items()
           if k not in {"IFLOW2API_HOME", "DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env["IMPORT_IFLOW_SETTINGS"] = "0"
    server = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            assert server.poll() is None, "the autostart command exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("the server started by the desktop entry did not answer")
        assert (tmp_path / "data").is_dir() and any((tmp_path / "data").iterdir())
    finally:
        server.terminate()
        server.wait(40)


def test_systemd_unit_with_tray_and_passed_options(tmp_path: Path):
    config = tmp_path / "cfg"  # XDG_CONFIG_HOME is honoured
    assert run(tmp_path, "enable", "--tray", XDG_CONFIG_HOME=str(config)).returncode == 0
    xdg_entry = config / "autostart/iflow2api.desktop"
    assert xdg_entry.is_file()

    result = run(tmp_path, "enable", "--systemd", "--tray", "--", "--port", "28001",
                 XDG_CONFIG_HOME=str(config))
    assert result.returncode == 0, result.stderr
    unit = config / "systemd/user/iflow2api.service"
    # One way to start is enough: the XDG entry made the line before is gone.
    assert f"Removed the XDG autostart at {xdg_entry}." in result.stdout
    assert not xdg_entry.exists()
    assert "the unit is read at your next login" in result.stdout
    assert unit.read_text() == (
        "[Unit]\n"
        "Description=iflow2api API gateway\n"
        "After=network-online.target\n"
        "PartOf=graphical-session.target\n"
        "After=graphical-session.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={CLI} tray --port 28001\n"
        f"Environment=IFLOW2API_HOME={tmp_path}/data\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "\n"
        "[Install]\n"
        "WantedBy=graphical-session.target\n"
    )
    link = config / "systemd/user/graphical-session.target.wants/iflow2api.service"
    assert link.is_symlink() and link.resolve() == unit.resolve()
    if shutil.which("systemd-analyze"):
        verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                                  text=True)
        assert verified.returncode == 0, verified.stderr

    status = run(tmp_path, "status", XDG_CONFIG_HOME=str(config)).stdout
    assert "XDG autostart: not installed" in status
    assert "systemd user unit: enabled" in status
    assert f"runs:  env IFLOW2API_HOME={tmp_path}/data {CLI} tray --port 28001" in status

    # Back to the server alone: the WantedBy link moves to default.target.
    run(tmp_path, "enable", "--systemd", XDG_CONFIG_HOME=str(config))
    assert not link.exists()
    assert (config / "systemd/user/default.target.wants/iflow2api.service").is_symlink()

    disabled = run(tmp_path, "disable", XDG_CONFIG_HOME=str(config))
    assert f"Removed the systemd user unit at {unit}." in disabled.stdout
    assert not unit.exists()
    assert not any(config.rglob("iflow2api.service"))


def test_extra_variables_are_kept_but_never_printed(tmp_path: Path):
    secret = "sk-do-not-print-" + "x" * 20
    result = run(tmp_path, "enable", "--env", "UPSTREAM_API_KEY", UPSTREAM_API_KEY=secret)
    assert result.returncode == 0, result.stderr
    entry = tmp_path / ".config/autostart/iflow2api.desktop"
    assert f"UPSTREAM_API_KEY={secret}" in entry.read_text()
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    status = run(tmp_path, "status")
    for output in (result.stdout, result.stderr, status.stdout, status.stderr):
        assert secret not in output
    assert "UPSTREAM_API_KEY=…" in status.stdout

    missing = run(tmp_path, "enable", "--env", "NOT_SET_ANYWHERE_42")
    assert missing.returncode != 0
    assert "NOT_SET_ANYWHERE_42: the variable is not set" in missing.stderr


def test_status_warns_when_the_python_it_runs_is_gone(tmp_path: Path):
    gone = str(tmp_path / "old-venv/bin/python")
    XdgAutostart(tmp_path / ".config").install(Launch(gone, ("serve",)))
    status = run(tmp_path, "status").stdout
    assert f"warning: {gone} no longer exists" in status


def test_systemd_status_warns_when_the_unit_is_not_enabled(tmp_path: Path):
    unit = SystemdUser(tmp_path / ".config")
    unit.install(Launch(PY, ("serve",)))
    unit.enabled_link().unlink()  # type: ignore[union-attr]
    assert "the unit is not enabled" in run(tmp_path, "status").stdout


def test_the_windows_launcher_sets_variables_and_logs_without_a_console(tmp_path: Path):
    home = tmp_path / "data dir"
    env = {k: v for k, v in os.environ.items()
           if k not in {"IFLOW2API_HOME", "DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    # pythonw.exe starts with sys.stdout and sys.stderr set to None: do the same here.
    code = ("import runpy, sys; sys.stdout = sys.stderr = None; "
            f"sys.argv = ['launch', 'IFLOW2API_HOME={home}', '--', 'check']; "
            "runpy.run_module('iflow2api_site.launch', run_name='__main__')")
    result = subprocess.run([PY, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "System check identified no issues" in (home / "iflow2api.log").read_text()


# --- pure functions: exact content -----------------------------------------------------------

def test_launch_keeps_iflow2api_home_only_when_set():
    assert launch_for(python="/py", environ={}) == Launch("/py", ("serve",), ())
    launch = launch_for(tray=True, extra_args=["--port", "1"], python="/py",
                        environ={"IFLOW2API_HOME": "/d", "OTHER": "x"})
    assert launch == Launch("/py", ("tray", "--port", "1"), (("IFLOW2API_HOME", "/d"),))
    assert launch.argv == ("/py", "-m", "iflow2api_site.cli", "tray", "--port", "1")


def test_desktop_exec_quoting_round_trips():
    launch = Launch(AWKWARD[0], tuple(AWKWARD[1:]), (("IFLOW2API_HOME", "/a b/$x"),))
    entry = desktop_entry(launch)
    exec_line = next(line[5:] for line in entry.splitlines() if line.startswith("Exec="))
    assert parse_desktop_exec(exec_line) == [
        "env", "IFLOW2API_HOME=/a b/$x", AWKWARD[0], "-m", "iflow2api_site.cli", *AWKWARD[1:]]
    assert desktop_exec_quote("/usr/bin/python3") == "/usr/bin/python3"
    assert desktop_exec_quote("50%") == "50%%"
    assert desktop_exec_quote('a "b" $c') == '"a \\"b\\" \\$c"'


def test_systemd_quoting_round_trips():
    launch = Launch(AWKWARD[0], tuple(AWKWARD[1:]))
    exec_line = next(line[10:] for line in systemd_unit(launch).splitlines()
                     if line.startswith("ExecStart="))
    assert parse_systemd_exec(exec_line) == [AWKWARD[0], "-m", "iflow2api_site.cli",
                                             *AWKWARD[1:]]
    assert systemd_quote("$HOME") == '"$$HOME"'
    assert systemd_quote("A=$x", expands_variables=False) == '"A=$x"'


def test_launchd_plist_exact_content():
    launch = Launch("/Users/me/.venv/bin/python", ("serve", "--port", "28001"),
                    (("IFLOW2API_HOME", "/Users/me/gw"),))
    assert launchd_plist(launch, log_path="/Users/me/Library/Logs/iflow2api.log").decode() == (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" '
        '"http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
        '<plist version="1.0">\n'
        "<dict>\n"
        "\t<key>EnvironmentVariables</key>\n"
        "\t<dict>\n"
        "\t\t<key>IFLOW2API_HOME</key>\n"
        "\t\t<string>/Users/me/gw</string>\n"
        "\t</dict>\n"
        "\t<key>KeepAlive</key>\n"
        "\t<dict>\n"
        "\t\t<key>SuccessfulExit</key>\n"
        "\t\t<false/>\n"
        "\t</dict>\n"
        "\t<key>Label</key>\n"
        "\t<string>io.github.iflow2api</string>\n"
        "\t<key>ProcessType</key>\n"
        "\t<string>Interactive</string>\n"
        "\t<key>ProgramArguments</key>\n"
        "\t<array>\n"
        "\t\t<string>/Users/me/.venv/bin/python</string>\n"
        "\t\t<string>-m</string>\n"
        "\t\t<string>iflow2api_site.cli</string>\n"
        "\t\t<string>serve</string>\n"
        "\t\t<string>--port</string>\n"
        "\t\t<string>28001</string>\n"
        "\t</array>\n"
        "\t<key>RunAtLoad</key>\n"
        "\t<true/>\n"
        "\t<key>StandardErrorPath</key>\n"
        "\t<string>/Users/me/Library/Logs/iflow2api.log</string>\n"
        "\t<key>StandardOutPath</key>\n"
        "\t<string>/Users/me/Library/Logs/iflow2api.log</string>\n"
        "</dict>\n"
        "</plist>\n"
    )
    without_env = plistlib.loads(launchd_plist(Launch("/py", ("tray",)), log_path="/l"))
    assert "EnvironmentVariables" not in without_env
    assert without_env["ProgramArguments"] == ["/py", "-m", "iflow2api_site.cli", "tray"]


def test_launch_agent_files(tmp_path: Path):
    agent = LaunchAgent(tmp_path)
    launch = Launch("/py", ("serve",), (("IFLOW2API_HOME", "/d"),))
    where = agent.install(launch)
    assert where == str(tmp_path / "Library/LaunchAgents/io.github.iflow2api.plist")
    installed = agent.installed()
    assert installed is not None
    assert installed.command == ["env", "IFLOW2API_HOME=/d", "/py", "-m",
                                 "iflow2api_site.cli", "serve"]
    assert installed.program == "/py"
    assert agent.remove() and agent.installed() is None and not agent.remove()


def test_windows_command_exact_content():
    launch = Launch(r"C:\Users\Me\iflow 2api\.venv\Scripts\python.exe", ("serve",),
                    (("IFLOW2API_HOME", r"C:\Users\Me\gw data"),))
    command = windows_command(launch)
    assert command == (
        r'"C:\Users\Me\iflow 2api\.venv\Scripts\pythonw.exe" -m iflow2api_site.launch '
        r'"IFLOW2API_HOME=C:\Users\Me\gw data" -- serve')
    assert split_windows_command(command) == [
        r"C:\Users\Me\iflow 2api\.venv\Scripts\pythonw.exe", "-m", "iflow2api_site.launch",
        r"IFLOW2API_HOME=C:\Users\Me\gw data", "--", "serve"]
    tricky = ['C:\\a b\\', 'say "hi"', "x\\\\y", ""]
    assert split_windows_command(subprocess.list2cmdline(tricky)) == tricky
    assert pythonw_for(r"C:\Python\python.exe") == r"C:\Python\pythonw.exe"
    assert pythonw_for("/usr/bin/python3") == "/usr/bin/python3"


class FakeRunKey:
    """The Run key's values, in a dict: the seam the real winreg-backed class fills."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def set(self, name: str, value: str) -> None:
        self.calls.append(("set", name))
        self.values[name] = value

    def delete(self, name: str) -> None:
        self.calls.append(("delete", name))
        del self.values[name]


def test_windows_run_key():
    registry = FakeRunKey()
    (backend,) = backends("win32", registry=registry)
    assert isinstance(backend, RegistryRun) and backend.installed() is None
    launch = Launch(r"C:\py\python.exe", ("tray",))
    assert backend.install(launch) == (
        r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\iflow2api")
    assert registry.values == {
        "iflow2api": r"C:\py\pythonw.exe -m iflow2api_site.launch -- tray"}
    installed = backend.installed()
    assert installed is not None and installed.program == r"C:\py\pythonw.exe"
    assert backend.remove() is True and registry.values == {}
    assert backend.remove() is False  # idempotent: no delete of a missing value
    assert registry.calls == [("set", "iflow2api"), ("delete", "iflow2api")]


def test_backends_per_platform(tmp_path: Path):
    linux = backends("linux", environ={"XDG_CONFIG_HOME": str(tmp_path)})
    assert [type(b) for b in linux] == [XdgAutostart, SystemdUser]
    assert linux[0].path == tmp_path / "autostart/iflow2api.desktop"  # type: ignore[attr-defined]
    relative = backends("linux", environ={"XDG_CONFIG_HOME": "relative/dir"})[0]
    assert relative.path == Path.home() / ".config/autostart/iflow2api.desktop"  # type: ignore[attr-defined]
    assert [type(b) for b in backends("darwin")] == [LaunchAgent]

