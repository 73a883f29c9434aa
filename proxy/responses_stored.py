"""GET /v1/responses/{id}, GET /v1/responses/{id}/input_items and DELETE /v1/responses/{id}:
the stored responses (proxy/responses_state.py), each visible only to the client key that
made it. An unknown, deleted, expired or someone else's id is the same 404."""

from __future__ import annotations

from urllib.parse import parse_qs

from django.utils.translation import gettext

from proxy import responses_state
from proxy.chat import openai_error
from proxy.errors import ApiError
from proxy.http import ApiRequest, JsonResult
from proxy.pipeline import admit
from proxy.responses import not_found, owner_of

MAX_LIMIT = 100


def response_id_in(path: str) -> str:
    """The `{response_id}` segment of /v1/responses/{response_id}[/input_items]."""
    parts = path.strip("/").split("/")
    return parts[parts.index("responses") + 1]


async def get_response(request: ApiRequest) -> JsonResult:
    try:
        opts = await admit(request)
        response_id = response_id_in(request.path)
        stored = await responses_state.run(responses_state.find, response_id, owner_of(opts))
        if stored is None:
            raise not_found(response_id)
        return JsonResult.of(stored.response)
    except ApiError as error:
        return openai_error(error)


async def delete_response(request: ApiRequest) -> JsonResult:
    try:
        opts = await admit(request)
        response_id = response_id_in(request.path)
        if not await responses_state.run(responses_state.delete, response_id, owner_of(opts)):
            raise not_found(response_id)
        return JsonResult.of({"id": response_id, "object": "response", "deleted": True})
    except ApiError as error:
        return openai_error(error)


def _query(request: ApiRequest) -> dict[str, str]:
    return {name: values[-1] for name, values in parse_qs(request.query).items()}


async def list_input_items(request: ApiRequest) -> JsonResult:
    try:
        opts = await admit(request)
        response_id = response_id_in(request.path)
        query = _query(request)
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ApiError(400, gettext("`order` must be `asc` or `desc`"), "invalid_value",
                           "order")
        limit_text = query.get("limit", "20")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
            raise ApiError(400, gettext("`limit` must be an integer from 1 to %(max)d")
                           % {"max": MAX_LIMIT}, "invalid_value", "limit")
        stored = await responses_state.run(responses_state.find, response_id, owner_of(opts))
        if stored is None:
            raise not_found(response_id)
        return JsonResult.of(responses_state.input_items_page(
            stored, order=order, limit=int(limit_text), after=query.get("after") or None))
    except ApiError as error:
        return openai_error(error)
