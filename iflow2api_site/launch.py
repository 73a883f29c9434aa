"""`python -m iflow2api_site.launch [NAME=VALUE ...] -- <iflow2api command ...>`

What the Windows Run key starts: that key holds a bare command line, which can neither set
environment variables nor give pythonw.exe (no console window) somewhere to print. This sets
the variables, sends output to `<IFLOW2API_HOME>/iflow2api.log` when there is no console, and
runs the `iflow2api` command.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def split_arguments(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """`NAME=VALUE ... -- command ...` into the variables and the command."""
    if "--" in argv:
        at = argv.index("--")
        assignments, command = argv[:at], argv[at + 1:]
    else:
        assignments, command = [], argv
    env = dict(a.split("=", 1) for a in assignments if "=" in a)
    return env, command


def ensure_output(home: Path) -> Path | None:
    """pythonw.exe has no stdout/stderr (None): print into a log file instead."""
    if sys.stdout is not None and sys.stderr is not None:
        return None
    home.mkdir(parents=True, exist_ok=True)
    path = home / "iflow2api.log"
    log = path.open("a", encoding="utf-8", buffering=1)
    sys.stdout = sys.stdout or log
    sys.stderr = sys.stderr or log
    return path


def main(argv: list[str] | None = None) -> None:
    env, command = split_arguments(sys.argv[1:] if argv is None else argv)
    os.environ.update(env)
    home = Path(os.environ.get("IFLOW2API_HOME") or Path.home() / ".iflow2api").expanduser()
    ensure_output(home)
    from iflow2api_site.cli import main as cli_main

    sys.argv = ["iflow2api", *command]
    cli_main()


if __name__ == "__main__":
    main()
