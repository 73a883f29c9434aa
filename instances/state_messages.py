"""An instance's state message (why it is in error, where it listens), in the reader's language.

The server that runs the instances writes the message into the database in English (one server
writes for every reader, each with a language of their own); the admin and the live status page
show it in theirs: the text is matched against the few templates below and said again through
the translation catalogue. Anything else (a message written by an older version) is shown as
it is.
"""

from __future__ import annotations

import re

from django.utils.translation import gettext, gettext_noop

OPEN_RELAY = gettext_noop(
    "refusing to listen on %(host)s: an address other than loopback needs at least one client "
    "key, or anyone who reaches it can spend your upstream quota. Create one with "
    "`iflow2api createkey --instance %(name)s`.")
ADDRESS_OVERRIDDEN = gettext_noop(
    "listening on %(host)s:%(port)s, set by --host/--port or IFLOW2API_HOST/IFLOW2API_PORT")
CANNOT_LISTEN = gettext_noop("cannot listen on %(host)s:%(port)s: %(reason)s")
TEMPLATES = (OPEN_RELAY, ADDRESS_OVERRIDDEN, CANNOT_LISTEN)

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def written(template: str, **params: object) -> str:
    """The message as the database keeps it: the English template filled in."""
    return template % params


def _pattern(template: str) -> re.Pattern[str]:
    parts, last = [], 0
    for found in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[last:found.start()]))
        name = found.group(1)
        parts.append(rf"(?P<{name}>\d+)" if name == "port" else rf"(?P<{name}>.*?)")
        last = found.end()
    parts.append(re.escape(template[last:]))
    return re.compile("".join(parts), re.S)


# Each template with the pattern that reads its parameters back, compiled once at import.
_PATTERNS = tuple((template, _pattern(template)) for template in TEMPLATES)


def shown(message: str) -> str:
    """A stored state message in the active language."""
    for template, pattern in _PATTERNS:
        found = pattern.fullmatch(message)
        if found is not None:
            return gettext(template) % found.groupdict()
    return message
