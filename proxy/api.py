"""The Ninja API: thin operations that hand the raw request to the protocol handlers.

Bodies are read raw (not through schemas) because a proxy must keep every field it does not
know and answer bad JSON in the client's own error format. Every path also works without the
`/v1` prefix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI, Router

from iflow2api_lib import __version__
from proxy import catalog, chat, messages
from proxy.errors import ApiError
from proxy.http import (
    ApiRequest,
    JsonResult,
    StreamResult,
    body_too_large,
    call_handler,
    to_django,
)

Handler = Callable[[ApiRequest], Awaitable[JsonResult | StreamResult]]
ErrorRenderer = Callable[[ApiError], JsonResult]

api = NinjaAPI(
    title="iflow2api",
    version=__version__,
    description="OpenAI- and Anthropic-compatible gateway. Authenticate with "
    "`Authorization: Bearer <key>` or `x-api-key: <key>` when keys are configured.",
    docs_url="/docs",
    urls_namespace="api",
)
router = Router()


async def run(request: HttpRequest, handler: Handler, render_error: ErrorRenderer) -> HttpResponse:
    try:
        body = request.body
    except RequestDataTooBig:
        return to_django(render_error(body_too_large()))
    result = await call_handler(handler, ApiRequest.from_django(request, body), render_error)
    if isinstance(result, StreamResult) and result.cleanup is not None:
        result.chunks = _cleaning_up(result.chunks, result.cleanup)
    return to_django(result)


async def _cleaning_up(chunks: AsyncIterator[bytes],
                       cleanup: Callable[[], Awaitable[None]]) -> AsyncIterator[bytes]:
    # (A response Django never starts to send is not covered here; the fast path covers it.)
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        await cleanup()


CHAT_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object",
            "required": ["model", "messages"],
            "properties": {
                "model": {"type": "string", "example": "glm-5"},
                "messages": {"type": "array", "items": {"type": "object"}},
                "stream": {"type": "boolean"},
                "max_tokens": {"type": "integer"},
                "tools": {"type": "array", "items": {"type": "object"}},
            },
            "additionalProperties": True,
        }}},
    }
}


@router.post("/v1/chat/completions", openapi_extra=CHAT_SCHEMA, tags=["OpenAI"],
             summary="Chat Completions (OpenAI)")
@router.post("/chat/completions", include_in_schema=False)
async def chat_completions(request: HttpRequest) -> HttpResponse:
    return await run(request, chat.chat_completions, chat.openai_error)


MESSAGES_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object",
            "required": ["model", "messages", "max_tokens"],
            "properties": {
                "model": {"type": "string", "example": "claude-sonnet-4-6"},
                "max_tokens": {"type": "integer", "example": 1024},
                "messages": {"type": "array", "items": {"type": "object"}},
                "system": {"oneOf": [{"type": "string"},
                                     {"type": "array", "items": {"type": "object"}}]},
                "stream": {"type": "boolean"},
                "tools": {"type": "array", "items": {"type": "object"}},
                "thinking": {"type": "object"},
            },
            "additionalProperties": True,
        }}},
    }
}


@router.post("/v1/messages", openapi_extra=MESSAGES_SCHEMA, tags=["Anthropic"],
             summary="Messages (Anthropic)")
@router.post("/v1/messages/", include_in_schema=False)
@router.post("/messages", include_in_schema=False)
@router.post("/messages/", include_in_schema=False)
async def create_message(request: HttpRequest) -> HttpResponse:
    return await run(request, messages.messages, messages.anthropic_error)


@router.post("/v1/messages/count_tokens", openapi_extra=MESSAGES_SCHEMA, tags=["Anthropic"],
             summary="Count tokens (local estimate)")
@router.post("/v1/messages/count_tokens/", include_in_schema=False)
@router.post("/messages/count_tokens", include_in_schema=False)
@router.post("/messages/count_tokens/", include_in_schema=False)
async def count_tokens(request: HttpRequest) -> HttpResponse:
    return await run(request, messages.count_tokens, messages.anthropic_error)


@router.api_operation(["HEAD", "GET"], "/api/hello", include_in_schema=False)
async def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(status=200)


@router.get("/v1/models", tags=["OpenAI", "Anthropic"], summary="List models")
@router.get("/models", include_in_schema=False)
async def list_models(request: HttpRequest) -> HttpResponse:
    return await run(request, catalog.list_models, chat.openai_error)


@router.get("/health", tags=["Service"], summary="Health")
async def health(request: HttpRequest) -> HttpResponse:
    return await run(request, catalog.health, chat.openai_error)


api.add_router("", router)
