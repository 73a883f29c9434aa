"""The autostart entries as text: a desktop entry, a systemd unit, a launchd plist, a Windows
command line, and the parsers that read them back for `autostart status`. Pure functions, so
every platform's output is tested for exact content on any platform."""

from __future__ import annotations

import plistlib
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import PureWindowsPath

APP_ID = "iflow2api"
LAUNCHD_LABEL = "io.github.iflow2api"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"


@dataclass(frozen=True)
class Launch:
    """What autostart runs: `<python> -m iflow2api_site.cli <args>` with `env` set."""

    python: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()

    @property
    def argv(self) -> tuple[str, ...]:
        return (self.python, "-m", "iflow2api_site.cli", *self.args)



# --- Linux: XDG autostart --------------------------------------------------------------------

_DESKTOP_PLAIN = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def desktop_exec_quote(arg: str) -> str:
    """One argument of a desktop entry's Exec key (quoting rules of the Desktop Entry spec)."""
    arg = arg.replace("%", "%%")  # field codes
    if _DESKTOP_PLAIN.match(arg):
        return arg
    return '"' + re.sub(r'(["`$\\])', r"\\\1", arg) + '"'


def desktop_string(value: str) -> str:
    """A desktop entry string value: backslash and control characters escaped."""
    return (value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
            .replace("\r", "\\r"))


def desktop_exec(launch: Launch) -> str:
    prefix = ["env", *(f"{name}={value}" for name, value in launch.env)] if launch.env else []
    return " ".join(desktop_exec_quote(a) for a in (*prefix, *launch.argv))


def desktop_entry(launch: Launch) -> str:
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Name=iflow2api\n"
        "Comment=OpenAI- and Anthropic-compatible API gateway\n"
        f"Exec={desktop_string(desktop_exec(launch))}\n"
        "Terminal=false\n"
        "NoDisplay=true\n"
        "X-GNOME-Autostart-enabled=true\n"
    )


def parse_desktop_exec(value: str) -> list[str]:
    """The arguments of a stored Exec value (the inverse of desktop_entry's quoting)."""
    unescaped = re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r", "s": " "}.get(
        m.group(1), m.group(1)), value)
    args, current, quoted, started, i = [], "", False, False, 0
    while i < len(unescaped):
        char = unescaped[i]
        if quoted and char == "\\" and i + 1 < len(unescaped):
            current, i = current + unescaped[i + 1], i + 2
            continue
        if char == '"':
            quoted, started = not quoted, True
        elif char == " " and not quoted:
            if started:
                args.append(current)
            current, started = "", False
        else:
            current, started = current + char, True
        i += 1
    if started:
        args.append(current)
    return [a.replace("%%", "%") for a in args]


# --- Linux: systemd user unit ----------------------------------------------------------------

_SYSTEMD_PLAIN = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")


def systemd_quote(arg: str, *, expands_variables: bool = True) -> str:
    arg = arg.replace("%", "%%")  # specifiers
    if expands_variables:  # ExecStart= expands $NAME; Environment= does not
        arg = arg.replace("$", "$$")
    if _SYSTEMD_PLAIN.match(arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(launch: Launch) -> str:
    # The tray needs the graphical session (DISPLAY); the server alone starts at login.
    target = "graphical-session.target" if launch.args[:1] == ("tray",) else "default.target"
    lines = [
        "[Unit]",
        "Description=iflow2api API gateway",
        "After=network-online.target",
    ]
    if target == "graphical-session.target":
        lines += ["PartOf=graphical-session.target", "After=graphical-session.target"]
    lines += ["", "[Service]", "Type=simple",
              "ExecStart=" + " ".join(systemd_quote(a) for a in launch.argv)]
    lines += [f"Environment={systemd_quote(f'{name}={value}', expands_variables=False)}"
              for name, value in launch.env]
    lines += ["Restart=on-failure", "RestartSec=5", "", "[Install]", f"WantedBy={target}", ""]
    return "\n".join(lines)


def parse_systemd_exec(value: str) -> list[str]:
    return [a.replace("%%", "%").replace("$$", "$") for a in shlex.split(value)]


# --- macOS: LaunchAgent ----------------------------------------------------------------------

def launchd_plist(launch: Launch, *, log_path: str) -> bytes:
    data: dict[str, object] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(launch.argv),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # restart after a crash, not after Quit
        "ProcessType": "Interactive",
        "StandardOutPath": log_path,
        "StandardErrorPath": log_path,
    }
    if launch.env:
        data["EnvironmentVariables"] = dict(launch.env)
    return plistlib.dumps(data, sort_keys=True)


# --- Windows: HKCU Run -----------------------------------------------------------------------

def pythonw_for(python: str) -> str:
    """pythonw.exe next to python.exe: no console window at login."""
    path = PureWindowsPath(python)
    if path.name.lower() == "python.exe":
        return str(path.with_name("pythonw.exe"))
    return python


def windows_command(launch: Launch) -> str:
    # The Run key holds one command line and cannot set variables: the launcher sets them and
    # gives pythonw's missing console a log file.
    args = [pythonw_for(launch.python), "-m", "iflow2api_site.launch"]
    args += [f"{name}={value}" for name, value in launch.env]
    args += ["--", *launch.args]
    return subprocess.list2cmdline(args)


def split_windows_command(command: str) -> list[str]:
    """The inverse of list2cmdline (the C runtime's rules for quotes and backslashes)."""
    args: list[str] = []
    current, quoted, started, slashes = "", False, False, 0
    for char in command:
        if char == "\\":
            slashes += 1
            continue
        if char == '"':
            current += "\\" * (slashes // 2)
            if slashes % 2:
                current += '"'
            else:
                quoted = not quoted
            slashes, started = 0, True
            continue
        if slashes:
            current, slashes, started = current + "\\" * slashes, 0, True
        if char in " \t" and not quoted:
            if started:
                args.append(current)
            current, started = "", False
        else:
            current, started = current + char, True
    current += "\\" * slashes
    if started or slashes:
        args.append(current)
    return args
