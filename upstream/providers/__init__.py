"""Upstream providers by name: `get_provider("iflow")`, `get_provider("openai")`,
`get_provider("anthropic")`."""

from __future__ import annotations

from upstream.providers import anthropic, iflow, openai
from upstream.providers.base import Provider

__all__ = ["Provider", "UnknownProviderError", "get_provider", "provider_names"]

_PROVIDERS: dict[str, Provider] = {
    "anthropic": anthropic.PROVIDER,
    "iflow": iflow.PROVIDER,
    "openai": openai.PROVIDER,
}
# Spellings an admin form or settings file may reasonably use for the generic provider.
_ALIASES = {"openai-compatible": "openai", "openai_compatible": "openai"}


class UnknownProviderError(KeyError, ValueError):
    """No provider of that name (catchable as KeyError or ValueError)."""


def get_provider(name: str) -> Provider:
    """The provider for `name` (case-insensitive); UnknownProviderError otherwise."""
    key = (name or "").strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return _PROVIDERS[key]
    except KeyError:
        raise UnknownProviderError(f"unknown upstream provider: {name!r}") from None


def provider_names() -> list[str]:
    return sorted(_PROVIDERS)
