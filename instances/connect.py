"""The admin's "Connect a client" page: ready-to-paste set-up for Claude Code, the Codex CLI,
the SDKs, curl and the chat apps, for one instance and one of its keys, with the address the
instance really listens on.

No key is ever rendered: a key is shown once, when it is made (instances/admin.py). The page
writes YOUR_KEY where it goes; a key pasted into the page (or handed over in the URL's
#fragment by the new-key page, which browsers never send) replaces it in the browser only
(instances/static/instances/connect.js)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from accounts.models import ModelInfo
from instances.models import DEFAULT_INSTANCE, Instance

KEY_PLACEHOLDER = "YOUR_KEY"
NO_KEY_NEEDED = "any-value"  # an instance without client keys takes any value
VIEW_PERMISSION = "instances.view_instance"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
EVERYWHERE = {"0.0.0.0", "::", ""}


@dataclass(frozen=True)
class Snippet:
    slug: str
    title: str
    where: str  # where it goes: a file, a settings screen
    text: str
    language: str = "sh"


def client_base_url(instance: Instance, request_host: str = "") -> str:
    """The address a client uses for the instance: PUBLIC_BASE_URL for the default instance
    when it is set; else the host and port it listens on (as bound, while it runs), with the
    admin's own host name for an instance on every address (0.0.0.0 says nothing a client
    can use)."""
    public = (settings.IFLOW2API.get("PUBLIC_BASE_URL") or "").strip().rstrip("/")
    if public and instance.name == DEFAULT_INSTANCE:
        return public
    host, port = instance.host.strip(), instance.port
    if instance.state == Instance.State.RUNNING and instance.listening_on:
        # As bound: `serve --host/--port` may differ from the row (instances/supervisor.py).
        bound = urlsplit(f"//{instance.listening_on}")
        host, port = bound.hostname or host, bound.port or port
    if host in EVERYWHERE:
        host = urlsplit(f"//{request_host}").hostname or "127.0.0.1"
    elif host == "localhost":
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"http://{host}:{port}"


def _settings(*pairs: tuple[str, str]) -> str:
    """A chat app's settings screen as "field: value" lines."""
    return "\n".join(f"{name}: {value}" for name, value in pairs)


def snippets(base: str, key: str, model: str) -> list[Snippet]:
    v1 = f"{base}/v1"
    quoted_model = json.dumps(model)
    return [
        Snippet("claude-code", "Claude Code", _("environment, then run claude"),
                f"export ANTHROPIC_BASE_URL={base}\n"
                f"export ANTHROPIC_AUTH_TOKEN={key}\n"
                f"export ANTHROPIC_MODEL={model}\n"
                f"export ANTHROPIC_SMALL_FAST_MODEL={model}\n"
                "export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1\n"
                "claude"),
        Snippet("codex", "Codex CLI", _("~/.codex/config.toml, then run codex with the key in "
                                        "IFLOW2API_KEY"),
                f"model = {quoted_model}\n"
                'model_provider = "iflow2api"\n\n'
                "[model_providers.iflow2api]\n"
                'name = "iflow2api"\n'
                f'base_url = "{v1}"\n'
                'env_key = "IFLOW2API_KEY"\n'
                'wire_api = "responses"\n\n'
                f"# export IFLOW2API_KEY={key}", "toml"),
        Snippet("openai-python", _("openai SDK (Python)"), "pip install openai",
                "from openai import OpenAI\n\n"
                f'client = OpenAI(base_url="{v1}", api_key="{key}")\n'
                "answer = client.chat.completions.create(\n"
                f"    model={quoted_model},\n"
                '    messages=[{"role": "user", "content": "Hello!"}],\n'
                ")\n"
                "print(answer.choices[0].message.content)", "python"),
        Snippet("anthropic-python", _("anthropic SDK (Python)"), "pip install anthropic",
                "import anthropic\n\n"
                f'client = anthropic.Anthropic(base_url="{base}", api_key="{key}")\n'
                "message = client.messages.create(\n"
                f"    model={quoted_model}, max_tokens=1024,\n"
                '    messages=[{"role": "user", "content": "Hello!"}],\n'
                ")\n"
                "print(message.content[0].text)", "python"),
        Snippet("curl", "curl", _("a terminal"),
                f"curl {v1}/chat/completions \\\n"
                f"  -H 'authorization: Bearer {key}' -H 'content-type: application/json' \\\n"
                f"  -d '{{\"model\": {quoted_model}, \"messages\": "
                "[{\"role\": \"user\", \"content\": \"Hello!\"}]}'\n"
                f"curl {v1}/models -H 'authorization: Bearer {key}'"),
        Snippet("lobechat", "LobeChat", _("Settings → Language Model → OpenAI"), _settings(
            (_("API Key"), key), (_("API proxy address"), v1),
            (_("Client-side fetching"), _("on")),
            (_("Model list"), _("fetch it, or add") + f" {model}"))),
        Snippet("open-webui", "Open WebUI",
                _("Admin Panel → Settings → Connections → OpenAI API → add a connection"),
                _settings((_("URL"), v1), (_("Key"), key), (_("Model IDs"), model))),
        Snippet("nextchat", "ChatGPT-Next-Web (NextChat)",
                _("Settings → Custom Endpoint (or the environment of its server)"),
                _settings((_("Endpoint"), base), (_("API Key"), key),
                          (_("Custom models"), model))
                + "\n\n# " + _("or, where it is deployed") + ":\n"
                + f"BASE_URL={base}\nOPENAI_API_KEY={key}\nCUSTOM_MODELS=+{model}"),
        Snippet("cherry-studio", "Cherry Studio",
                _("Settings → Model Provider → Add (type OpenAI)"),
                _settings((_("API Key"), key), (_("API Host"), base),
                          (_("Models"), _("Manage → fetch, or add") + f" {model}"))),
    ]


def _served_models() -> list[str]:
    return list(ModelInfo.objects.filter(enabled=True).order_by("model_id")
                .values_list("model_id", flat=True))


def _choice(request: HttpRequest, name: str) -> int | None:
    try:
        return int(request.GET.get(name, ""))
    except ValueError:
        return None


def connect_page(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm(VIEW_PERMISSION):
        raise PermissionDenied
    instances = list(Instance.objects.order_by("port"))
    chosen_id = _choice(request, "instance")
    instance = next((i for i in instances if i.pk == chosen_id), None) or next(
        (i for i in instances if i.name == DEFAULT_INSTANCE), instances[0] if instances else None)
    keys = list(instance.keys.order_by("name")) if instance else []
    key_id = _choice(request, "key")
    key = next((k for k in keys if k.pk == key_id), None)
    models = _served_models()
    model = request.GET.get("model", "")
    if model not in models:
        default = (instance.default_model if instance else "") or \
            settings.IFLOW2API["DEFAULT_MODEL"]
        model = default if default in models or not models else models[0]
    needs_key = bool(keys) or bool(instance and instance.name == DEFAULT_INSTANCE
                                   and settings.IFLOW2API.get("API_KEYS"))
    base = client_base_url(instance, request.get_host()) if instance else ""
    placeholder = KEY_PLACEHOLDER if needs_key else NO_KEY_NEEDED
    return render(request, "admin/instances/connect.html", {
        **admin.site.each_context(request),
        "title": _("Connect a client"),
        "instances": instances, "instance": instance, "keys": keys, "key": key,
        "models": models, "model": model, "base": base, "needs_key": needs_key,
        "placeholder": placeholder,
        "snippets": snippets(base, placeholder, model) if instance else [],
    })

