"""GET /v1/responses/{id}, GET /v1/responses/{id}/input_items and DELETE /v1/responses/{id}:
the stored responses (proxy/responses_state.py), each visible only to the client key that
made it. An unknown, deleted, expired or someone else's id is the same 404.

input_items lists, as the API does, every item the response was generated from: with
`previous_response_id`, the earlier responses' input and output items come first, then the
request's own input. Items are shown in the API's item shapes (message content as parts, a
`status` on messages and calls) and paged by item id: `order` (desc by default), `limit`
(1-100, default 20), `after` and `before` (cursors: item ids), as the openai SDK's
`input_items.list` pages with `after=<last id>` until `has_more` is false.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from django.utils.translation import gettext

from proxy import responses_state
from proxy.chat import openai_error
from proxy.errors import ApiError
from proxy.http import ApiRequest, JsonResult
from proxy.pipeline import admit
from proxy.responses import not_found, owner_of

# The query's bounds and defaults; proxy/schemas.py InputItemListQuery documents them.
ORDERS = ("asc", "desc")
DEFAULT_ORDER = "desc"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Item types the API lists with a status (required by the SDK's models for most of them).
_WITH_STATUS = frozenset({"message", "function_call", "function_call_output",
                          "custom_tool_call", "custom_tool_call_output"})


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


def as_listed(item: dict[str, Any]) -> dict[str, Any]:
    """An input item as the API lists it: a message's string content becomes one text part
    (`input_text`, or `output_text` for the assistant), `output_text` parts get their
    `annotations`, `input_image` parts their `detail`, messages and calls a `status`."""
    item = dict(item)
    if "type" not in item and "role" in item:
        item["type"] = "message"
    kind = item.get("type")
    if kind == "message":
        assistant = item.get("role") == "assistant"
        content = item.get("content")
        if isinstance(content, str):
            content = [{"type": "output_text" if assistant else "input_text", "text": content}]
        if isinstance(content, list):
            item["content"] = [_listed_part(part) for part in content]
    if kind in _WITH_STATUS:
        item.setdefault("status", "completed")
    return item


def _listed_part(part: Any) -> Any:
    if not isinstance(part, dict):
        return part
    if part.get("type") == "output_text":
        return {**part, "annotations": part.get("annotations") or []}
    if part.get("type") == "input_image":
        return {**part, "detail": part.get("detail") or "auto"}
    return part


def page_of(items: list[dict[str, Any]], *, order: str, limit: int, after: str | None,
            before: str | None) -> dict[str, Any]:
    """A list object (data, first_id, last_id, has_more) of `items` (oldest first) in `order`:
    the items after the `after` item and before the `before` item; `limit` of them from the
    start of that window, or from its end with only `before` (the page just before it). An id
    that is not in the list gives an empty page, never the first one again (so an SDK that
    pages on cannot loop)."""
    ordered = items if order == "asc" else items[::-1]
    ids = [item.get("id") for item in ordered]
    start, end = 0, len(ordered)
    if after is not None:
        start = ids.index(after) + 1 if after in ids else end
    if before is not None:
        end = ids.index(before) if before in ids else start
    window = ordered[start:end] if start < end else []
    page = window[-limit:] if before is not None and after is None else window[:limit]
    return {"object": "list", "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(window) > limit}


def limit_in(query: dict[str, str]) -> int:
    """The `limit` parameter: ASCII digits only (`isdigit` alone lets `²` through, which
    `int` refuses), from 1 to MAX_LIMIT."""
    text = query.get("limit", str(DEFAULT_LIMIT))
    digits = text.lstrip("0") or "0"
    if not (text.isascii() and text.isdigit() and len(digits) <= len(str(MAX_LIMIT))
            and 1 <= int(digits) <= MAX_LIMIT):
        raise ApiError(400, gettext("`limit` must be an integer from 1 to %(max)d")
                       % {"max": MAX_LIMIT}, "invalid_value", "limit")
    return int(digits)


async def list_input_items(request: ApiRequest) -> JsonResult:
    try:
        opts = await admit(request)
        response_id = response_id_in(request.path)
        query = _query(request)
        order = query.get("order", DEFAULT_ORDER)
        if order not in ORDERS:
            raise ApiError(400, gettext("`order` must be `asc` or `desc`"), "invalid_value",
                           "order")
        limit = limit_in(query)
        items = await responses_state.run(responses_state.listed_input_items, response_id,
                                          owner_of(opts))
        if items is None:
            raise not_found(response_id)
        return JsonResult.of(page_of(
            [as_listed(item) for item in items], order=order, limit=limit,
            after=query.get("after") or None, before=query.get("before") or None))
    except ApiError as error:
        return openai_error(error)
