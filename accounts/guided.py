"""The guided "add an upstream" page's presets and its connection test (the views are in
accounts/guided_views.py).

Each preset says which provider kind it is, the base URL its vendor documents, and what the
user has to enter: a key (required, optional or none) and whether the URL may change. The test
reads the provider's model list as the model sync does (accounts/upstream_calls.py, the one
upstream client); its failures become a sentence in the user's language.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts.models import Account, Provider
from accounts.presets import PRESETS as ANTHROPIC_PRESETS
from accounts.upstream_calls import MAX_MESSAGE, describe, read_listing
from upstream.providers import UnknownProviderError
from upstream.types import UpstreamError

REQUIRED, OPTIONAL, NONE = "required", "optional", "none"
GROUPS = {
    "iflow": "iFlow",
    "cloud": gettext_lazy("Model providers (OpenAI-compatible)"),
    "anthropic": gettext_lazy("Model providers (Anthropic-compatible)"),
    "local": gettext_lazy("A model server on your machine or network"),
    "custom": gettext_lazy("Anything else"),
}


@dataclass(frozen=True)
class Preset:
    slug: str
    label: str
    group: str
    provider: str
    base_url: str = ""
    key: str = REQUIRED
    url_editable: bool = False
    key_page: str = ""  # where the vendor hands out keys
    check_path: str = ""  # a path that must answer too (a provider whose model list is public)
    hint: Any = ""
    extra: dict[str, Any] = field(default_factory=dict)  # more Account fields (Anthropic presets)


# Base URLs as each vendor documents them for OpenAI clients (see docs/accounts.md).
PRESETS: list[Preset] = [
    Preset("iflow", "iFlow", "iflow", Provider.IFLOW, "https://apis.iflow.cn/v1",
           key_page="https://platform.iflow.cn",
           hint=gettext_lazy("iFlow shut down in April 2026; its protocol is kept for those "
                             "who still have access.")),
    Preset("deepseek", "DeepSeek", "cloud", Provider.OPENAI, "https://api.deepseek.com/v1"),
    Preset("moonshot", "Moonshot Kimi", "cloud", Provider.OPENAI, "https://api.moonshot.ai/v1",
           key_page="https://platform.moonshot.ai/console/api-keys"),
    Preset("moonshot-cn", "Moonshot Kimi (China)", "cloud", Provider.OPENAI,
           "https://api.moonshot.cn/v1"),
    Preset("zhipu", "Zhipu GLM (bigmodel.cn)", "cloud", Provider.OPENAI,
           "https://open.bigmodel.cn/api/paas/v4", key_page="https://bigmodel.cn"),
    Preset("zai", "Z.AI GLM (international)", "cloud", Provider.OPENAI,
           "https://api.z.ai/api/paas/v4"),
    Preset("dashscope", "DashScope Qwen (China)", "cloud", Provider.OPENAI,
           "https://dashscope.aliyuncs.com/compatible-mode/v1"),
    Preset("dashscope-intl", "DashScope Qwen (international)", "cloud", Provider.OPENAI,
           "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"),
    Preset("minimax", "MiniMax (international)", "cloud", Provider.OPENAI,
           "https://api.minimax.io/v1"),
    Preset("minimax-cn", "MiniMax (China)", "cloud", Provider.OPENAI,
           "https://api.minimaxi.com/v1"),
    Preset("openrouter", "OpenRouter", "cloud", Provider.OPENAI, "https://openrouter.ai/api/v1",
           key_page="https://openrouter.ai/settings/keys", check_path="key",
           hint=gettext_lazy("Hundreds of models: tick only the ones to serve.")),
    Preset("ollama", "Ollama", "local", Provider.OPENAI, "http://127.0.0.1:11434/v1",
           key=NONE, url_editable=True),
    Preset("vllm", "vLLM", "local", Provider.OPENAI, "http://127.0.0.1:8000/v1", key=OPTIONAL,
           url_editable=True,
           hint=gettext_lazy("Enter the key only when vLLM was started with --api-key.")),
    Preset("llama-cpp", "llama.cpp (llama-server)", "local", Provider.OPENAI,
           "http://127.0.0.1:8080/v1", key=OPTIONAL, url_editable=True,
           hint=gettext_lazy("Enter the key only when llama-server was started with "
                             "--api-key.")),
    Preset("openai-compatible", gettext_lazy("Any OpenAI-compatible API"), "custom",
           Provider.OPENAI, key=OPTIONAL, url_editable=True,
           hint=gettext_lazy("The base URL is the part before /chat/completions; it usually "
                             "ends in /v1.")),
]
# The Anthropic-compatible presets (accounts/presets.py) whose vendor answers GET /v1/models,
# so that the key can be tested; the others are reached with the same vendor's
# OpenAI-compatible preset above, or the expert form.
PRESETS += [
    Preset(f"anthropic-{p.name}", p.label, "anthropic", Provider.ANTHROPIC, p.base_url,
           key=OPTIONAL if p.name == "llama.cpp" else REQUIRED,
           url_editable=p.name == "llama.cpp",
           extra={"auth_header": p.auth_header, "beta_policy": p.beta_policy})
    for p in ANTHROPIC_PRESETS.values() if p.models_list
]


def find(slug: str) -> Preset | None:
    return next((p for p in PRESETS if p.slug == slug), None)


def grouped() -> list[tuple[str, list[Preset]]]:
    return [(str(title), [p for p in PRESETS if p.group == group])
            for group, title in GROUPS.items() if any(p.group == group for p in PRESETS)]


@dataclass
class TestResult:
    ok: bool
    models: list[dict[str, Any]] = field(default_factory=list)  # the listing's entries
    error: str = ""


def problem(error: Exception, account: Account) -> str:
    """What went wrong, in the user's words and language (no secret in it)."""
    url = account.base_url
    if isinstance(error, UpstreamError):
        detail = describe(error, (account.api_key,) if account.api_key else ())
        if error.status in (401, 403) or error.code in ("invalid_api_key", "upstream_401"):
            return _("The provider refused the key (%(detail)s). Check it, or make a new one.") \
                % {"detail": detail}
        if error.code == "upstream_unreachable":
            return _("Nothing answers at %(url)s: check the address, and that the server is "
                     "running.") % {"url": url}
        if error.code == "upstream_timeout":
            return _("%(url)s did not answer in time.") % {"url": url}
        if error.code in ("upstream_invalid_json", "upstream_invalid_models", "upstream_404",
                          "model_not_found") or error.status == 404:
            if account.provider == Provider.ANTHROPIC:
                return _("%(url)s does not look like an Anthropic-compatible API: it has no "
                         "model list at %(url)s/v1/models.") % {"url": url}
            return _("%(url)s does not look like an OpenAI-compatible API: it has no model "
                     "list at %(url)s/models. The base URL is the part before "
                     "/chat/completions (it usually ends in /v1).") % {"url": url}
        return _("The test failed: %(detail)s") % {"detail": detail}
    return _("The test failed: %(detail)s") % {"detail": str(error)[:MAX_MESSAGE]}


async def test_connection(account: Account, preset: Preset) -> TestResult:
    """Reads the model list with the account's key (not saved yet); never raises for an
    upstream failure."""
    try:
        entries = await read_listing(account, check_path=preset.check_path)
    except (UpstreamError, UnknownProviderError) as exc:
        return TestResult(False, error=problem(exc, account))
    return TestResult(True, [_small(e) for e in entries])


def _small(entry: dict[str, Any]) -> dict[str, Any]:
    """What the catalogue keeps of a listing entry (it waits in the session for the next
    page)."""
    keep = ("id", "owned_by", "display_name", "name", "context_length", "max_model_len")
    return {k: entry[k] for k in keep if isinstance(entry.get(k), str | int)}
