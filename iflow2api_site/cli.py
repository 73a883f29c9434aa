"""The `iflow2api` command: Django's manage.py under our own name, in the user's language:
`iflow2api --lang zh-hans <command>`, or the locale (IFLOW2API_LANG, LC_ALL, LC_MESSAGES,
LANG such as zh_CN.UTF-8). English otherwise. A bare `iflow2api`, --help and --version print
ours (cli_help.py); `iflow2api help --all` is Django's list of every command."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iflow2api_site.settings")
    import django
    from django.conf import settings
    from django.core.management import execute_from_command_line
    from django.utils import translation

    from iflow2api_lib.i18n import language_from_environment, split_lang_option, supported
    from iflow2api_site.cli_help import curated, django_argv

    asked, argv = split_lang_option(sys.argv)
    django.setup()  # the catalogues need the apps (execute_from_command_line's setup is a no-op)
    if asked is not None:
        language = supported(asked)
        if language is None:
            known = ", ".join(code for code, _name in settings.LANGUAGES)
            sys.stderr.write(translation.gettext("--lang: unknown language %(language)r "
                                                 "(available: %(known)s)")
                             % {"language": asked, "known": known} + "\n")
            sys.exit(2)
        os.environ["IFLOW2API_LANG"] = language  # child processes (tray → serve) follow it
    else:
        language = language_from_environment(os.environ)
    if language:
        # Django's commands keep the active language (only makemigrations and migrate drop it).
        translation.activate(language)
    text = curated(argv)
    if text is not None:
        sys.stdout.write(text)
        return
    execute_from_command_line(django_argv(argv))


if __name__ == "__main__":
    main()
