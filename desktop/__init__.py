"""Desktop conveniences: start with the computer (autostart) and the tray icon."""

from __future__ import annotations


def split_passthrough(args: list[str]) -> tuple[list[str], list[str]]:
    """`own options -- options for the started command` (the second part may be empty)."""
    if "--" not in args:
        return args, []
    at = args.index("--")
    return args[:at], args[at + 1:]
