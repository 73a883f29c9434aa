"""OpenAI `usage` -> Anthropic `usage` (spec §C: input_tokens excludes cache reads)."""

from __future__ import annotations

from typing import Any


def _count(value: Any) -> int:
    """Upstreams send ints, floats, strings or null; anything unusable counts as 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return max(int(value), 0)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def cached_tokens(usage: dict[str, Any]) -> int:
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    # DeepSeek reports cache hits in its own field.
    return cached or _count(usage.get("prompt_cache_hit_tokens"))


def anthropic_usage(openai_usage: dict[str, Any] | None) -> dict[str, int]:
    """All four Anthropic fields, always ints (the SDKs crash on missing/None usage fields)."""
    usage = openai_usage if isinstance(openai_usage, dict) else {}
    prompt = _count(usage.get("prompt_tokens"))
    cached = min(cached_tokens(usage), prompt) if prompt else cached_tokens(usage)
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": _count(usage.get("completion_tokens")),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }
