"""Start iflow2api when the user logs in: XDG autostart or a systemd user unit on Linux, a
LaunchAgent on macOS, the HKCU Run key on Windows.

The file contents and the registry value are made by pure functions (tested for exact
content); the backends only write, read and remove them. Nothing here starts the server now:
enabling autostart while a server already runs must not start a second one on the same port.
"""

from __future__ import annotations

import contextlib
import os
import plistlib
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from desktop.formats import (
    APP_ID,
    LAUNCHD_LABEL,
    RUN_KEY,
    Launch,
    desktop_entry,
    launchd_plist,
    parse_desktop_exec,
    parse_systemd_exec,
    split_windows_command,
    systemd_unit,
    windows_command,
)

# Carried into the started command so it serves the same data as the shell that enabled it.
KEPT_VARIABLES = ("IFLOW2API_HOME",)


def launch_for(*, tray: bool = False, extra_args: Sequence[str] = (), python: str | None = None,
               environ: Mapping[str, str] | None = None) -> Launch:
    environ = os.environ if environ is None else environ
    env = tuple((name, environ[name]) for name in KEPT_VARIABLES if environ.get(name))
    return Launch(python=python or sys.executable,
                  args=("tray" if tray else "serve", *extra_args), env=env)


class RunRegistry(Protocol):
    """The values of HKCU\\...\\CurrentVersion\\Run (a seam: tests pass a dict-backed one)."""

    def get(self, name: str) -> str | None: ...
    def set(self, name: str, value: str) -> None: ...
    def delete(self, name: str) -> None: ...


class WinRegRun:
    """The real Run key; winreg exists only on Windows, so it is imported there, late."""

    def _key(self, write: bool) -> Any:
        import winreg

        access = winreg.KEY_SET_VALUE if write else winreg.KEY_QUERY_VALUE
        return winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, access)

    def get(self, name: str) -> str | None:
        import winreg

        with self._key(False) as key:
            try:
                return str(winreg.QueryValueEx(key, name)[0])
            except FileNotFoundError:
                return None

    def set(self, name: str, value: str) -> None:
        import winreg

        with self._key(True) as key:
            winreg.SetValueEx(key, name, 0, winreg.REG_SZ, value)

    def delete(self, name: str) -> None:
        import winreg

        with self._key(True) as key, contextlib.suppress(FileNotFoundError):
            winreg.DeleteValue(key, name)


# --- Backends --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Installed:
    method: str
    where: str
    command: list[str]  # as stored, split into arguments

    @property
    def program(self) -> str | None:
        """The executable that will run (after `env NAME=value`), to spot a removed venv."""
        args = list(self.command)
        if args[:1] == ["env"]:
            args = args[1:]
            while args and "=" in args[0] and not args[0].startswith("/"):
                args = args[1:]
        return args[0] if args else None


def with_env(env: list[str], command: list[str]) -> list[str]:
    """Variables and command as one `env NAME=value … program …` line, like a desktop entry's."""
    return ["env", *env, *command] if env else command


class Backend(Protocol):
    method: str
    label: str

    def install(self, launch: Launch) -> str: ...
    def remove(self) -> bool: ...
    def installed(self) -> Installed | None: ...


def _write(path: Path, content: str | bytes) -> None:
    """Atomically, mode 0600: an entry may carry variables (--env) that are nobody else's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, 0o600)
    tmp.replace(path)  # never a half-written entry


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def config_home(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    value = environ.get("XDG_CONFIG_HOME", "")
    return Path(value) if value and Path(value).is_absolute() else Path.home() / ".config"


@dataclass
class XdgAutostart:
    config: Path
    method = "xdg"
    label = "XDG autostart"

    @property
    def path(self) -> Path:
        return self.config / "autostart" / f"{APP_ID}.desktop"

    def install(self, launch: Launch) -> str:
        _write(self.path, desktop_entry(launch))
        return str(self.path)

    def remove(self) -> bool:
        return _unlink(self.path)

    def installed(self) -> Installed | None:
        if not self.path.is_file():
            return None
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.startswith("Exec="):
                return Installed(self.method, str(self.path), parse_desktop_exec(line[5:]))
        return Installed(self.method, str(self.path), [])


@dataclass
class SystemdUser:
    config: Path
    method = "systemd"
    label = "systemd user unit"
    TARGETS = ("default.target", "graphical-session.target")

    @property
    def path(self) -> Path:
        return self.config / "systemd" / "user" / f"{APP_ID}.service"

    def _wants(self, target: str) -> Path:
        return self.path.parent / f"{target}.wants" / self.path.name

    def install(self, launch: Launch) -> str:
        text = systemd_unit(launch)
        _write(self.path, text)
        wanted_by = text.rsplit("WantedBy=", 1)[1].strip()
        for target in self.TARGETS:  # what `systemctl --user enable` does, without a bus
            link = self._wants(target)
            if link.is_symlink() or link.exists():
                link.unlink()
            if target == wanted_by:
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(self.path)
        return str(self.path)

    def remove(self) -> bool:
        removed = [_unlink(self._wants(target)) for target in self.TARGETS]
        return _unlink(self.path) or any(removed)

    def installed(self) -> Installed | None:
        if not self.path.is_file():
            return None
        env: list[str] = []
        command: list[str] = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.startswith("ExecStart="):
                command = parse_systemd_exec(line[10:])
            elif line.startswith("Environment="):
                env += [a.replace("%%", "%") for a in shlex.split(line[12:])]
        return Installed(self.method, str(self.path), with_env(env, command))

    def enabled_link(self) -> Path | None:
        return next((self._wants(t) for t in self.TARGETS if self._wants(t).is_symlink()), None)

    @staticmethod
    def reload() -> bool:
        """Tells a running user manager about the new unit; False when there is none."""
        runtime = os.environ.get("XDG_RUNTIME_DIR", "")
        if not runtime or not Path(runtime, "systemd").is_dir():
            return False
        try:
            return subprocess.run(["systemctl", "--user", "daemon-reload"], capture_output=True,
                                  timeout=15).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False


@dataclass
class LaunchAgent:
    home: Path
    method = "launchd"
    label = "LaunchAgent"

    @property
    def path(self) -> Path:
        return self.home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"

    @property
    def log_path(self) -> Path:
        return self.home / "Library" / "Logs" / f"{APP_ID}.log"

    def install(self, launch: Launch) -> str:
        _write(self.path, launchd_plist(launch, log_path=str(self.log_path)))
        return str(self.path)

    def remove(self) -> bool:
        return _unlink(self.path)

    def installed(self) -> Installed | None:
        if not self.path.is_file():
            return None
        data = plistlib.loads(self.path.read_bytes())
        env = [f"{k}={v}" for k, v in data.get("EnvironmentVariables", {}).items()]
        return Installed(self.method, str(self.path),
                         with_env(env, list(data.get("ProgramArguments", []))))


@dataclass
class RegistryRun:
    registry: RunRegistry
    method = "registry"
    label = "Windows Run key"

    @property
    def where(self) -> str:
        return f"HKEY_CURRENT_USER\\{RUN_KEY}\\{APP_ID}"

    def install(self, launch: Launch) -> str:
        self.registry.set(APP_ID, windows_command(launch))
        return self.where

    def remove(self) -> bool:
        if self.registry.get(APP_ID) is None:
            return False
        self.registry.delete(APP_ID)
        return True

    def installed(self) -> Installed | None:
        value = self.registry.get(APP_ID)
        if value is None:
            return None
        return Installed(self.method, self.where, split_windows_command(value))


def backends(platform: str | None = None, *, registry: RunRegistry | None = None,
             environ: Mapping[str, str] | None = None) -> list[Backend]:
    """Every way this platform can autostart, the default first."""
    platform = platform or sys.platform
    if platform == "win32":
        return [RegistryRun(registry or WinRegRun())]
    if platform == "darwin":
        return [LaunchAgent(Path.home())]
    return [XdgAutostart(config_home(environ)), SystemdUser(config_home(environ))]
