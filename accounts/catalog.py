"""The iFlow model list the catalogue is seeded with (spec: the last official list)."""

from __future__ import annotations

# (id, display name, owner, context length, max output tokens, vision)
IFLOW_MODELS: list[tuple[str, str, str, int, int, bool]] = [
    ("glm-4.6", "GLM-4.6", "zhipu", 200000, 32000, False),
    ("glm-4.7", "GLM-4.7", "zhipu", 200000, 32000, False),
    ("glm-5", "GLM-5", "zhipu", 200000, 128000, False),
    ("iFlow-ROME-30BA3B", "iFlow-ROME-30BA3B", "iflow", 128000, 64000, False),
    ("deepseek-v3.2-chat", "DeepSeek-V3.2", "deepseek", 128000, 8000, False),
    ("qwen3-coder-plus", "Qwen3-Coder-Plus", "alibaba", 256000, 64000, False),
    ("kimi-k2", "Kimi-K2", "moonshot", 128000, 32000, False),
    ("kimi-k2-thinking", "Kimi-K2-Thinking", "moonshot", 256000, 32000, False),
    ("kimi-k2.5", "Kimi-K2.5", "moonshot", 262144, 8192, False),
    ("kimi-k2-0905", "Kimi-K2-0905", "moonshot", 256000, 32000, False),
    ("minimax-m2.5", "MiniMax-M2.5", "minimax", 200000, 8192, False),
    ("qwen-vl-max", "Qwen-VL-Max", "alibaba", 128000, 8192, True),
]
