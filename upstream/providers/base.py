"""What every upstream provider module offers: pure request building and error mapping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from upstream.types import PreparedRequest, UpstreamError, UpstreamTarget


@runtime_checkable
class Provider(Protocol):
    """Turns canonical OpenAI Chat Completions bodies into upstream requests and maps failures.

    Implementations do no I/O: the HTTP client sends what they prepare and feeds back what it got.
    """

    name: str
    wire: str  # "chat" or "messages": the wire protocol of the upstream

    def prepare_chat(
        self, target: UpstreamTarget, body: dict[str, Any], *, stream: bool
    ) -> PreparedRequest:
        """POST {base}/chat/completions for `body` (never mutated)."""
        ...

    def prepare_models(self, target: UpstreamTarget) -> PreparedRequest:
        """GET {base}/models (body b"")."""
        ...

    def error_from_response(
        self, status: int, headers: dict[str, str], body: bytes
    ) -> UpstreamError:
        """A non-2xx HTTP answer (header names lower-case) → the error we answer with."""
        ...

    def error_from_payload(self, obj: dict[str, Any]) -> UpstreamError | None:
        """A JSON object received with HTTP 200 (whole body or one SSE payload) that is an error.

        None for a normal completion or chunk.
        """
        ...


@dataclass(frozen=True)
class FunctionProvider:
    """A Provider made of a provider module's functions (each module defines the four).

    `wire` is the protocol the upstream speaks: "chat" (OpenAI Chat Completions: iflow,
    openai) or "messages" (Anthropic Messages: anthropic, which also defines
    prepare_messages and prepare_count_tokens). The proxy picks its translation by it."""

    name: str
    prepare_chat: Callable[..., PreparedRequest]
    prepare_models: Callable[..., PreparedRequest]
    error_from_response: Callable[[int, dict[str, str], bytes], UpstreamError]
    error_from_payload: Callable[[dict[str, Any]], UpstreamError | None]
    wire: str = "chat"
    prepare_messages: Callable[..., PreparedRequest] | None = None
    prepare_count_tokens: Callable[..., PreparedRequest] | None = None


def join_url(base_url: str, path: str) -> str:
    """`base` + `/path` without doubling or losing the slash."""
    return f"{base_url.rstrip('/')}/{path.lstrip('/')}"
