"""What a bare `iflow2api`, `iflow2api --help` and `iflow2api --version` print: our commands,
one line each, instead of Django's ~60 subcommands (`iflow2api help --all` lists those)."""

from __future__ import annotations

from importlib import metadata

from django.utils.translation import gettext, gettext_noop

# (command, one line): the commands a user needs, in the order they are needed.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("serve", gettext_noop("serve the API and the admin (http://127.0.0.1:28000 by default)")),
    ("addaccount", gettext_noop("add an upstream: any OpenAI-compatible URL and key "
                                "(or an iFlow key)")),
    ("iflow_login", gettext_noop("log in to iFlow (OAuth in a browser, or a cookie) and save "
                                 "the account")),
    ("createkey", gettext_noop("create a client API key (printed once)")),
    ("syncmodels", gettext_noop("read the OpenAI-compatible accounts' model lists into the "
                                "catalogue")),
    ("setprice", gettext_noop("set a model's prices per million tokens (the cost of each "
                              "request)")),
    ("rotatekeys", gettext_noop("re-encrypt the stored secrets with the newest encryption key")),
    ("autostart", gettext_noop("start iflow2api when you log in (enable, disable, status)")),
    ("tray", gettext_noop("run the server with a tray icon")),
    ("createsuperuser", gettext_noop("create an admin user for /admin/")),
)
HELP_FLAGS = frozenset({"-h", "--help"})


def version() -> str:
    """Our version, from the installed package's metadata (the source's, when not installed)."""
    try:
        return metadata.version("iflow2api")
    except metadata.PackageNotFoundError:
        from iflow2api_lib import __version__

        return __version__


def short_help(prog: str = "iflow2api") -> str:
    width = max(len(name) for name, _line in COMMANDS) + 2
    lines = [gettext("Usage: %(prog)s <command> [options]   (version %(version)s)")
             % {"prog": prog, "version": version()}, "",
             gettext("Commands:")]
    lines += [f"  {name:<{width}}{gettext(line)}" for name, line in COMMANDS]
    lines += ["", gettext("`%(prog)s help <command>` shows a command's options.") % {"prog": prog},
              gettext("`%(prog)s help --all` lists every command, Django's too.") % {"prog": prog},
              gettext("Options: --lang en|zh-hans (default: from LANG), --version.")]
    return "\n".join(lines) + "\n"


def curated(argv: list[str]) -> str | None:
    """What to print instead of running Django, for these arguments (None: run Django).
    A bare command, --help / -h alone and `help` alone get the short list; `help --all` is
    Django's `help`; --version (also after a command) is ours."""
    args = argv[1:]
    if not args or (len(args) == 1 and (args[0] in HELP_FLAGS or args[0] == "help")):
        return short_help()
    own = args[:args.index("--")] if "--" in args else args  # after --: another command's
    if "--version" in own:  # also after a command: ours, not Django's
        return version() + "\n"
    return None


def django_argv(argv: list[str]) -> list[str]:
    """`help --all` is Django's full `help`."""
    return [argv[0], "help"] if argv[1:] == ["help", "--all"] else argv
