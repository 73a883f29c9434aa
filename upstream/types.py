"""Plain data shared by the upstream providers and the client that sends their requests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UpstreamTarget:
    """Where and as whom a request goes: one account of one provider, secrets already decrypted."""

    provider: str  # "iflow" | "openai"
    base_url: str
    api_key: str
    session_id: str = ""
    conversation_id: str = ""
    account_id: int | None = None
    proxy_url: str | None = None


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

    def __str__(self) -> str:
        return f"{self.status} {self.code or ''} {self.message}".strip()
