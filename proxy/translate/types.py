"""Plain data shared by the translators: options in, results out, one error for bad client input."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ECHO_MAX_CHARS = 100


def echo(value: Any, limit: int = ECHO_MAX_CHARS) -> str:
    """A client's value as quoted in an error message: at most `limit` characters and an
    ellipsis, so a 1 MB model name is not sent back (or logged) in full. The one helper for
    every echoed value (proxy/errors.py re-exports it for the Django side)."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def gettext_noop(message: str) -> str:
    """Marks a message for the translation catalogue (xgettext finds these calls). Translators
    stay pure: the caller translates the message when it answers the client."""
    return message


class TranslationError(ValueError):
    """The client's request cannot be translated; the caller answers 400 in the client's shape.

    `param` names the offending field (e.g. "messages.2.content.0.source") when known.
    """

    def __init__(self, message: str, param: str | None = None, *,
                 problem: str | None = None, args: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.problem = problem  # the catalogue message (with %(name)s placeholders)
        self.args_ = args or {}

    @classmethod
    def at(cls, param: str, problem: str, **args: Any) -> TranslationError:
        """`raise TranslationError.at("messages.0.role", gettext_noop("expected ..."))`: names
        the field; `args` (client values) fill the problem's %(name)s placeholders, cut short
        by `echo`."""
        args = {name: value if isinstance(value, int | float | None) else echo(value)
                for name, value in args.items()}
        return cls(f"{param}: {problem % args if args else problem}", param,
                   problem=problem, args=args)

    def localized(self, translate: Callable[[str], str]) -> str:
        """The message in the client's language (`translate` is the caller's gettext)."""
        if self.problem is None:
            return self.message
        problem = translate(self.problem)
        text = problem % self.args_ if self.args_ else problem
        return f"{self.param}: {text}" if self.param else text


class UpstreamResponseError(ValueError):
    """The upstream answered 200 with something that is not a chat completion (caller: 502)."""


@dataclass(frozen=True)
class TranslateOptions:
    """What the translator needs to know about the target model, built by the caller."""

    upstream_model: str
    # Clamp for max_tokens (Claude Code asks for 32000, most upstream models allow less).
    max_output_tokens: int | None = None
    # Used only when the client omitted max_tokens (Anthropic requires it; we are tolerant).
    default_max_tokens: int = 4096
    # False: images become a short text placeholder instead of image parts.
    vision: bool = True
    # Kimi rejects foreign tool ids in history: rewrite them all to `functions.{name}:{n}`.
    kimi_tool_ids: bool = False


@dataclass
class TranslatedRequest:
    """The upstream body plus what the response side needs to map back."""

    body: dict[str, Any]
    # Shortened upstream tool name -> original client name (only names that were shortened).
    tool_names: dict[str, str] = field(default_factory=dict)
