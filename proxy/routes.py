"""The API's route table: written once, everything else is derived from it.

Each Route names its method and path, the framework-free handler (ApiRequest in, JsonResult or
StreamResult out), the renderer of its errors (OpenAI's or Anthropic's shape), its typed request
and response bodies and its error statuses. From this table come:

- which paths are API paths (iflow2api_site/asgi.py sends them through CORS and proxy/adapter.py),
- the lookup by (method, path) the adapter and the listener use (`find`),
- the Ninja operations and so the OpenAPI document with typed bodies and query parameters
  (proxy/api.py).

Every documented path is also served without the `/v1` prefix and, for the Anthropic routes,
with a trailing slash (clients built with a base URL of `/` or `/v1/` differ here). A path may
hold one `{name}` segment (`/v1/responses/{response_id}`): it matches any one segment, and the
handler reads it from the request's path.

FAST_PATH (default on) picks who carries a request between the adapter and the handler: the
lean ASGI code in proxy/fastpath.py, or Django and the Ninja operations. Both run below the same
adapter (draining, in-flight count, body limit, cleanup of a stream's slots on every exit) and
must pass the same end-to-end tests (scripts/test runs them with FAST_PATH=false too).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import BaseModel

from proxy import catalog, chat, messages, responses, responses_stored, schemas
from proxy.errors import ApiError
from proxy.http import ApiRequest, JsonResult, StreamResult

Handler = Callable[[ApiRequest], Awaitable[JsonResult | StreamResult]]
Renderer = Callable[[ApiError], JsonResult]

ERROR_STATUSES = {
    400: "The request is malformed (in the client's error shape).",
    401: "No valid API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`.",
    403: "The key may not use this model, no upstream account can serve it, or the web page's "
         "origin is not allowed.",
    404: "Unknown model, or no stored response with this id for this key.",
    413: "The request body is over MAX_BODY_BYTES.",
    429: "A rate rule or the upstream's limit; see Retry-After.",
    502: "The upstream failed or answered something unusable.",
    503: "The server is shutting down, or this port's instance is unavailable; retry.",
    504: "The upstream timed out.",
}
RELAY_ERRORS = (400, 401, 403, 404, 413, 429, 502, 503, 504)
STORED_ERRORS = (400, 401, 404, 503)


@dataclass(frozen=True)
class Route:
    name: str  # the operation id
    method: str
    path: str  # as documented, with /v1
    handler: Handler
    render_error: Renderer
    summary: str
    tags: tuple[str, ...]
    request_schema: type[BaseModel] | None = None
    response_schema: type[BaseModel] | None = None
    stream_schema: type[BaseModel] | None = None  # the events of a `"stream": true` answer
    query_schema: type[BaseModel] | None = None  # its query parameters, one field each
    error_schema: type[BaseModel] = schemas.OpenAIError
    errors: tuple[int, ...] = ()
    unprefixed: bool = True  # also without /v1
    trailing_slash: bool = False  # also with a trailing slash
    documented: bool = True
    also_head: bool = False

    def paths(self) -> tuple[str, ...]:
        """Every path it is served on; the documented one first."""
        bases = [self.path]
        if self.unprefixed and self.path.startswith("/v1/"):
            bases.append(self.path[len("/v1"):])
        slashes = ("", "/") if self.trailing_slash else ("",)
        return tuple(base + slash for base in bases for slash in slashes)

    def methods(self) -> tuple[str, ...]:
        return (self.method, "HEAD") if self.also_head else (self.method,)

    @property
    def has_parameter(self) -> bool:
        return "{" in self.path


async def hello(request: ApiRequest) -> JsonResult:
    """A liveness probe some clients send (HEAD /api/hello)."""
    return JsonResult.of({})


ROUTES: tuple[Route, ...] = (
    Route("chat_completions", "POST", "/v1/chat/completions", chat.chat_completions,
          chat.openai_error, "Chat Completions (OpenAI)", ("OpenAI",),
          request_schema=schemas.ChatCompletionRequest, response_schema=schemas.ChatCompletion,
          stream_schema=schemas.ChatCompletionChunk, errors=RELAY_ERRORS),
    Route("create_message", "POST", "/v1/messages", messages.messages,
          messages.anthropic_error, "Messages (Anthropic)", ("Anthropic",),
          request_schema=schemas.MessagesRequest, response_schema=schemas.Message,
          stream_schema=schemas.MessageStreamEvent, error_schema=schemas.AnthropicError,
          errors=RELAY_ERRORS, trailing_slash=True),
    Route("count_tokens", "POST", "/v1/messages/count_tokens", messages.count_tokens,
          messages.anthropic_error, "Count tokens (local estimate)", ("Anthropic",),
          request_schema=schemas.CountTokensRequest, response_schema=schemas.TokenCount,
          error_schema=schemas.AnthropicError, errors=(400, 401, 413, 503),
          trailing_slash=True),
    Route("create_response", "POST", "/v1/responses", responses.create_response,
          chat.openai_error, "Create a response (OpenAI Responses)", ("OpenAI",),
          request_schema=schemas.ResponsesRequest, response_schema=schemas.Response,
          stream_schema=schemas.ResponseStreamEvent, errors=RELAY_ERRORS),
    Route("get_response", "GET", "/v1/responses/{response_id}", responses_stored.get_response,
          chat.openai_error, "Retrieve a stored response", ("OpenAI",),
          response_schema=schemas.Response, errors=STORED_ERRORS),
    Route("delete_response", "DELETE", "/v1/responses/{response_id}",
          responses_stored.delete_response, chat.openai_error, "Delete a stored response",
          ("OpenAI",), response_schema=schemas.DeletedResponse, errors=STORED_ERRORS),
    Route("list_input_items", "GET", "/v1/responses/{response_id}/input_items",
          responses_stored.list_input_items, chat.openai_error,
          "List a stored response's input items", ("OpenAI",),
          query_schema=schemas.InputItemListQuery, response_schema=schemas.InputItemList,
          errors=STORED_ERRORS),
    Route("list_models", "GET", "/v1/models", catalog.list_models, chat.openai_error,
          "List models", ("OpenAI", "Anthropic"), response_schema=schemas.ModelList,
          errors=(401, 503)),
    Route("health", "GET", "/health", catalog.health, chat.openai_error, "Health",
          ("Service",), response_schema=schemas.Health, errors=(503,), unprefixed=False),
    Route("hello", "GET", "/api/hello", hello, chat.openai_error, "Probe", ("Service",),
          unprefixed=False, documented=False, also_head=True),
)

BY_METHOD_AND_PATH: dict[tuple[str, str], Route] = {
    (method, path): route
    for route in ROUTES if not route.has_parameter
    for method in route.methods() for path in route.paths()
}
_SEGMENT = re.compile(r"\\\{\w+\\\}")  # an escaped `{name}`


def _pattern(path: str) -> re.Pattern[str]:
    return re.compile(_SEGMENT.sub("[^/]+", re.escape(path)) + r"\Z")


# The routes with a `{name}` segment: (method, pattern of one of its paths, route).
BY_PATTERN: tuple[tuple[str, re.Pattern[str], Route], ...] = tuple(
    (method, _pattern(path), route)
    for route in ROUTES if route.has_parameter
    for method in route.methods() for path in route.paths()
)
_UNPREFIXED_PATHS = frozenset(path for _method, path in BY_METHOD_AND_PATH
                              if not path.startswith("/v1/"))


def find(method: str, path: str) -> Route | None:
    found = BY_METHOD_AND_PATH.get((method, path))
    if found is None and "/" in path[1:]:
        found = next((route for m, pattern, route in BY_PATTERN
                      if m == method and pattern.match(path)), None)
    return found


def served_on(path: str) -> tuple[Route, ...]:
    """The routes on `path` whatever the method: when `find` has none for the request's
    method, a non-empty answer means a 405 (proxy/adapter.py refuse_method)."""
    exact = tuple(route for (_method, served), route in BY_METHOD_AND_PATH.items()
                  if served == path)
    return exact + tuple(route for _method, pattern, route in BY_PATTERN
                         if pattern.match(path))


def renderer_below(path: str) -> Renderer | None:
    """The error renderer of the route `path` lies below (/v1/messages/batches: Anthropic's),
    for the 404 of an unknown path; None below no route."""
    for (_method, served), route in BY_METHOD_AND_PATH.items():
        if path.startswith(served.rstrip("/") + "/"):
            return route.render_error
    return None


def is_api_path(path: str) -> bool:
    """The API's paths (also unknown ones under /v1/, which get the API's 404)."""
    return (path.startswith("/v1/") or path in _UNPREFIXED_PATHS
            or any(pattern.match(path) for _method, pattern, _route in BY_PATTERN))
