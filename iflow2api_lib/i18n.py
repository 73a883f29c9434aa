"""Choosing the language outside the admin (where LocaleMiddleware does it): the command line
(`--lang`, else the locale environment) and the API (Accept-Language, only when sent)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.utils.translation import get_supported_language_variant, to_language
from django.utils.translation.trans_real import parse_accept_lang_header

# Ours first (`--lang` sets it for child processes too), then POSIX order: the first set wins.
LOCALE_VARIABLES = ("IFLOW2API_LANG", "LC_ALL", "LC_MESSAGES", "LANG")


def supported(code: str) -> str | None:
    """Our LANGUAGES entry for a language code or locale name (zh_CN → zh-hans), or None."""
    code = code.strip()
    if not code or code in {"C", "POSIX"}:
        return None
    try:
        return get_supported_language_variant(to_language(code))
    except LookupError:
        return None


def language_from_environment(environ: Mapping[str, str]) -> str | None:
    """The language of a locale such as LANG=zh_CN.UTF-8 (encoding and @modifier dropped)."""
    for name in LOCALE_VARIABLES:
        value = environ.get(name, "")
        if value:
            return supported(value.split(".", 1)[0].split("@", 1)[0])
    return None


def split_lang_option(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """`--lang X` / `--lang=X` anywhere before a `--`, removed from argv (Django's commands
    do not know it)."""
    rest: list[str] = []
    chosen: str | None = None
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg == "--lang" and i + 1 < len(args):
            chosen, i = args[i + 1], i + 2
            continue
        if arg.startswith("--lang="):
            chosen, i = arg.split("=", 1)[1], i + 1
            continue
        rest.append(arg)
        i += 1
    return chosen, rest


def api_language(headers: Mapping[str, str]) -> str | None:
    """The language an API request asks for with Accept-Language; None when it sends none
    (then the answer is English, and nothing is activated: no cost on the hot path)."""
    header = headers.get("accept-language")
    if not header:
        return None
    for code, _quality in parse_accept_lang_header(header):
        if code == "*":
            break
        found = supported(code)
        if found:
            return found
    return None


class TranslatedHelp:
    """For a management command whose `help` is a lazy translation: argparse needs a str,
    made when the parser is (the language is chosen by then)."""

    help: Any

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        self.help = str(self.help)
        return super().create_parser(prog_name, subcommand, **kwargs)  # type: ignore[misc]
