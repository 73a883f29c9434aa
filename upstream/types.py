"""Plain data shared by the upstream providers and the client that sends their requests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class UpstreamTarget:
    """Where and as whom a request goes: one account of one provider, secrets already decrypted."""

    provider: str  # "iflow" | "openai" | "anthropic"
    base_url: str
    api_key: str
    session_id: str = ""
    conversation_id: str = ""
    account_id: int | None = None
    proxy_url: str | None = None
    # Anthropic Messages upstreams: how the key is sent ("x-api-key" or "bearer"), the
    # anthropic-version to send when the client sent none, and what happens to the client's
    # anthropic-beta header ("forward", "drop" or "allow": only the betas in beta_allowlist).
    auth_header: str = "x-api-key"
    anthropic_version: str = "2023-06-01"
    beta_policy: str = "drop"
    beta_allowlist: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreparedRequest:
    """An HTTP request ready to send. Header order is kept: iFlow's CLI has a fixed order."""

    url: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class UpstreamError(Exception):
    """An upstream failure, already mapped to the HTTP status we answer our client with.

    `code` is a short machine code ("context_length_exceeded", "upstream_434", "upstream_timeout");
    `account_action` tells the account pool what to do: "disable", "refresh", "cooldown" or None.
    """

    status: int
    message: str
    code: str | None = None
    retry_after: float | None = None
    upstream_status: str | None = None
    account_action: str | None = None
    # A context overflow's figures when the upstream stated them (the Anthropic wording
    # "prompt is too long: N tokens > M maximum" is built from them).
    prompt_tokens: int | None = None
    context_limit: int | None = None
    # The upstream's own error document when it is one our client understands as it is (an
    # Anthropic error for an Anthropic client): passed through with upstream_status.
    native: dict[str, Any] | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.code or ''} {self.message}".strip()


class FinalBatch(list):  # type: ignore[type-arg]
    """A stream's last batch: the upstream said within it that it was done (`data: [DONE]`,
    `message_stop`, or an error event), so nothing follows and the relay may end the stream in
    the same write instead of asking the upstream iterator once more (one task, one loop pass
    and one socket write less per stream). The iterator may be closed right after it."""

    __slots__ = ()
