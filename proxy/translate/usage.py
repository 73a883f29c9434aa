"""Upstream usage in each client's shape, with the prompt cache's share (spec §C).

Vendors report cache hits in different places; `cache_reads` reads them all:
- OpenAI, Zhipu, DashScope, OpenRouter, xAI, vLLM: `prompt_tokens_details.cached_tokens`;
- DeepSeek: `prompt_cache_hit_tokens` (beside `prompt_cache_miss_tokens`);
- Moonshot (Kimi): `cached_tokens` at the top of `usage`.
Cache writes (DashScope's explicit cache, OpenRouter, an Anthropic upstream through
anthropic_to_chat) come as `prompt_tokens_details.cache_creation_input_tokens` or
`cache_write_tokens`. In every case `prompt_tokens` counts all input, cached or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def _count(value: Any) -> int:
    """Upstreams send ints, floats, strings or null; anything unusable counts as 0."""
    if value is None:  # the usual two first: read several times for every request
        return 0
    if type(value) is int:
        return value if value > 0 else 0
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return max(int(value), 0)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def _details(usage: dict[str, Any]) -> dict[str, Any]:
    details = usage.get("prompt_tokens_details")
    return details if isinstance(details, dict) else {}


def cached_tokens(usage: dict[str, Any]) -> int:
    """Input tokens read from the upstream's prompt cache (any vendor's field)."""
    return (_count(_details(usage).get("cached_tokens"))
            or _count(usage.get("prompt_cache_hit_tokens"))
            or _count(usage.get("cached_tokens")))


def cache_write_tokens(usage: dict[str, Any]) -> int:
    """Input tokens written to the upstream's prompt cache (0 when not reported)."""
    details = _details(usage)
    return (_count(details.get("cache_write_tokens"))
            or _count(details.get("cache_creation_input_tokens")))


@dataclass(frozen=True)
class TokenUsage:
    """An upstream's usage, read once: what cost, the request log and the client shapes use."""

    prompt: int = 0  # every input token, cached or not
    cached: int = 0  # of `prompt`, read from the cache
    cache_write: int = 0  # of `prompt`, written to the cache
    completion: int = 0
    reported: bool = False  # the upstream sent a usage object at all

    @property
    def uncached(self) -> int:
        """Input tokens billed at the full input price."""
        return max(self.prompt - self.cached - self.cache_write, 0)


def read_usage(usage: Any) -> TokenUsage:
    """A chat-shaped usage object (any vendor's) as TokenUsage; cache counts never exceed the
    prompt when the prompt is known."""
    if not isinstance(usage, dict):
        return TokenUsage()
    prompt = _count(usage.get("prompt_tokens"))
    cached, written = cached_tokens(usage), cache_write_tokens(usage)
    if prompt:
        cached = min(cached, prompt)
        written = min(written, prompt - cached)
    return TokenUsage(prompt, cached, written, _count(usage.get("completion_tokens")), True)


def anthropic_usage(openai_usage: dict[str, Any] | None) -> dict[str, int]:
    """All four Anthropic fields, always ints (the SDKs crash on missing/None usage fields).
    Anthropic's input_tokens excludes cache reads and cache writes."""
    usage = read_usage(openai_usage)
    return {
        "input_tokens": usage.uncached if usage.prompt else 0,
        "output_tokens": usage.completion,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cached,
    }


def openai_usage(usage: Any) -> Any:
    """An upstream's chat usage for OpenAI clients: as sent, with the cache hits a vendor
    reports in its own field (DeepSeek, Moonshot) also in `prompt_tokens_details.
    cached_tokens`, where the openai SDK reads them. Unchanged when there is nothing to add."""
    if not isinstance(usage, dict):
        return usage
    cached = cached_tokens(usage)
    details = _details(usage)
    if not cached or _count(details.get("cached_tokens")) == cached:
        return usage
    return {**usage, "prompt_tokens_details": {**details, "cached_tokens": cached}}


def chunk_usage(chunk: dict[str, Any]) -> dict[str, Any] | None:
    """The usage a chat chunk carries: top level, or (Moonshot's streams) in its first choice."""
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        return usage
    choices = chunk.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        usage = choices[0].get("usage")
        if isinstance(usage, dict):
            return usage
    return None
