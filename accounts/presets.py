"""Presets for Anthropic-compatible upstreams: the base URL each vendor documents for
ANTHROPIC_BASE_URL, the header it reads the key from, and a safe anthropic-beta policy.

Sources are the vendors' own pages where found (docs/anthropic-upstreams.md lists them);
`models_list` says whether the vendor is known to answer GET {base}/v1/models (None: not
documented where we looked — try "Sync models", or list the models by hand).
"""

from __future__ import annotations

from dataclasses import dataclass

from accounts.models import AuthHeader, BetaPolicy


@dataclass(frozen=True)
class AnthropicPreset:
    name: str
    label: str
    base_url: str
    auth_header: str
    beta_policy: str = BetaPolicy.DROP
    models_list: bool | None = None


PRESETS: dict[str, AnthropicPreset] = {p.name: p for p in (
    AnthropicPreset("anthropic", "Anthropic", "https://api.anthropic.com", AuthHeader.X_API_KEY,
                    BetaPolicy.FORWARD, models_list=True),
    AnthropicPreset("zhipu", "Zhipu GLM (bigmodel.cn)", "https://open.bigmodel.cn/api/anthropic",
                    AuthHeader.BEARER),
    AnthropicPreset("zai", "Z.AI GLM (international)", "https://api.z.ai/api/anthropic",
                    AuthHeader.BEARER),
    AnthropicPreset("moonshot", "Moonshot Kimi (international)",
                    "https://api.moonshot.ai/anthropic", AuthHeader.BEARER),
    AnthropicPreset("moonshot-cn", "Moonshot Kimi (China)", "https://api.moonshot.cn/anthropic",
                    AuthHeader.BEARER),
    AnthropicPreset("deepseek", "DeepSeek", "https://api.deepseek.com/anthropic",
                    AuthHeader.X_API_KEY),
    AnthropicPreset("minimax", "MiniMax (international)", "https://api.minimax.io/anthropic",
                    AuthHeader.X_API_KEY),
    AnthropicPreset("minimax-cn", "MiniMax (China)", "https://api.minimaxi.com/anthropic",
                    AuthHeader.X_API_KEY),
    AnthropicPreset("llama.cpp", "llama.cpp llama-server (local)", "http://127.0.0.1:8080",
                    AuthHeader.BEARER, models_list=True),
)}


def preset(name: str) -> AnthropicPreset | None:
    return PRESETS.get((name or "").strip().lower())
