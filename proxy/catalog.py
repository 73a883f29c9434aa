"""GET /v1/models and GET /health."""

from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings

from iflow2api_lib import __version__
from proxy.errors import ApiError
from proxy.http import ApiRequest, JsonResult
from proxy.pipeline import admit


def _iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def list_models(request: ApiRequest) -> JsonResult:
    """One body for the OpenAI and Anthropic SDKs and Claude Code's model discovery: the
    models some usable account of this instance can serve (the admin's catalogue keeps the
    rest), their aliases, and the instance's aliases and claude-* tiers that lead to one."""
    try:
        opts = await admit(request)
    except ApiError as error:
        return JsonResult.of(error.openai_body(), error.status, error.headers())
    table = await opts.runtime.routing.get()
    key = opts.key
    allowed = opts.instance.account_ids
    served = [model for model in table.models if table.serves(model, allowed)]
    served_ids = {model.id for model in served}
    data = []
    for model in served:
        for name in (model.id, *model.aliases):
            if key is not None and not key.allows(name, model.id, *model.aliases):
                continue
            data.append({
                "id": name,
                "object": "model",
                "created": model.created,
                "owned_by": model.owned_by,
                "type": "model",
                "display_name": model.display_name if name == model.id else name,
                "created_at": _iso(model.created),
            })
    # Claude Code's gateway discovery keeps only ids containing "claude": list the tier aliases.
    extra = [*settings.IFLOW2API["CLAUDE_MODEL_ALIASES"], *opts.instance.model_aliases]
    for alias in dict.fromkeys(extra):
        target = table.find_model(
            opts.instance.model_aliases.get(alias) or opts.instance.tier_model(alias))
        if key is not None and target is not None and not key.allows(alias, target.id):
            continue
        if target is not None and table.find_model(alias) is None and target.id in served_ids:
            data.append({
                "id": alias,
                "object": "model",
                "created": target.created,
                "owned_by": "anthropic" if alias.startswith("claude") else target.owned_by,
                "type": "model",
                "display_name": f"{alias} → {target.display_name}",
                "created_at": _iso(target.created),
            })
    return JsonResult.of({
        "object": "list",
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    })


async def health(request: ApiRequest) -> JsonResult:
    table = await request.runtime.routing.get()
    return JsonResult.of({
        "status": "ok" if table.has_upstream else "degraded",
        "upstream_configured": table.has_upstream,
        "accounts": len(table.accounts),
        "models": len(table.models),
        "version": __version__,
    })
