"""The one way secrets are masked: log lines, the request log, error texts shown to clients or
admins, upstream answers quoted back.

Rules (each use gets all of them):
- the secrets the caller holds (an account's keys and tokens, an OAuth code), wherever they
  appear, and a secret's start (8+ characters) left at the end of a text cut short upstream;
- bearer/basic credentials, sk- keys, cookie values, `key=`/`token=`/`secret=`/`password=`-like
  values (api_key, access_token, accessToken, x-api-key: ...), URL passwords (user:pw@host);
- long opaque strings (40+ characters: keys, tokens, JWT parts), except identifiers made of
  words (snake_case or kebab-case letters, no digit), which stay readable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "[redacted]"
MIN_SECRET = 4  # shorter values would mask ordinary words
MIN_SECRET_PREFIX = 8

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[\w.~+/=-]+"), r"\1 " + MASK),
    (re.compile(r"\bsk-[\w-]{4,}"), "sk-" + MASK),
    # A cookie header's value runs to the end of the line (or the closing quote).
    (re.compile(r"(?i)\b((?:set-)?cookie)(['\"]?\s*[:=]\s*['\"]?)[^\n'\"]+"), r"\1\2" + MASK),
    (re.compile(r"(?i)\b((?:[\w-]*[_-])?(?:api[_-]?key|access[_-]?token|key|token|secret|"
                r"password|passwd|authorization))(['\"]?\s*[:=]\s*['\"]?)[^\s'\",;&}]+"),
     r"\1\2" + MASK),
    (re.compile(r"(://[^/\s:@]+:)[^/\s@]+@"), r"\1" + MASK + "@"),  # user:password@host
]
# Words one of the patterns above needs: most texts have none and skip them (a log line costs
# microseconds, not tens of them).
_TRIGGERS = ("bearer", "basic", "sk-", "cookie", "key", "token", "secret", "passw",
             "authorization", "://")
_LONG_RUN = re.compile(r"(?<![\w+=-])[\w+=-]{40,}")
_WORDS = re.compile(r"[A-Za-z]{1,24}(?:[_-][A-Za-z]{1,24})+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the given secrets and anything that looks like a credential masked."""
    held = sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True)
    for secret in held:
        text = text.replace(secret, MASK)
    for secret in held:
        text = _mask_cut_secret(text, secret)
    lowered = text.lower()
    if any(word in lowered for word in _TRIGGERS):
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
    return _LONG_RUN.sub(_mask_opaque, text)


def _mask_opaque(match: re.Match[str]) -> str:
    run = match.group()
    return run if _WORDS.fullmatch(run) else MASK


def _mask_cut_secret(text: str, secret: str) -> str:
    """A text cut short (by the upstream, or a length limit) may end in a secret's start."""
    for size in range(min(len(secret) - 1, len(text)), MIN_SECRET_PREFIX - 1, -1):
        if text.endswith(secret[:size]):
            return text[:-size] + MASK
    return text
