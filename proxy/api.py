"""The Ninja operations, one per route of the table (proxy/routes.py), and the OpenAPI document
(/openapi.json, /docs, /redoc) with the routes' typed bodies and query parameters and the
API-key schemes.

With FAST_PATH off, Django carries the API requests: the adapter (proxy/adapter.py) has read
the request and put its Exchange in the scope; the operation calls the route's handler and hands
a stream back through the exchange, so the adapter runs its cleanup whatever Django does with
the response. The operations validate nothing themselves: the handlers do, in the client's own
error shape (the schemas only document).
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext
from ninja import NinjaAPI, Router
from pydantic import BaseModel

from iflow2api_lib import __version__
from proxy import schemas
from proxy.adapter import EXCHANGE, Exchange
from proxy.docs_pages import swagger_page
from proxy.errors import ApiError
from proxy.http import StreamResult, call_handler, to_django
from proxy.routes import ERROR_STATUSES, ROUTES, Route

log = logging.getLogger(__name__)
SCHEMA_REF = "#/components/schemas/{model}"
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "`Authorization: Bearer <key>` (OpenAI clients)."},
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
               "description": "`x-api-key: <key>` (Anthropic clients)."},
}
# Either scheme; or none, on an instance without client keys.
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}, {}]


class GatewayApi(NinjaAPI):
    def get_openapi_schema(self, *, path_prefix: str | None = None,
                           path_params: dict[str, Any] | None = None) -> Any:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        for route in ROUTES:
            for model in (route.request_schema, route.stream_schema):
                if model is not None:
                    add_component(components.setdefault("schemas", {}), model)
        return schema


def add_component(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    """`model` and the models it refers to as components of the OpenAPI document."""
    found = model.model_json_schema(ref_template=SCHEMA_REF)
    schemas.update(found.pop("$defs", {}))
    schemas[model.__name__] = found


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": SCHEMA_REF.format(model=model.__name__)}


api = GatewayApi(
    title="iflow2api",
    version=__version__,
    description="OpenAI- and Anthropic-compatible gateway. Authenticate with "
    "`Authorization: Bearer <key>` or `x-api-key: <key>` when keys are configured. Every path "
    "also works without the `/v1` prefix.",
    docs_url="/docs",
    docs=swagger_page,  # our template: language, theme, CSP (proxy/docs_pages.py)
    urls_namespace="api",
)
router = Router()


async def carry(request: HttpRequest, route: Route) -> HttpResponse:
    exchange: Exchange | None = request.scope.get(EXCHANGE) if hasattr(request, "scope") else None
    if exchange is None:  # reached without the adapter: a wiring bug, never served half-way
        log.error("API operation %s reached without the adapter", route.name)
        return to_django(route.render_error(ApiError(500, gettext(
            "internal error in the gateway"), "internal_error")))
    route = exchange.route  # the adapter's match, for this very path and method
    result = await call_handler(route.handler, exchange.request, route.render_error)
    if isinstance(result, StreamResult):
        exchange.stream = result  # its cleanup is the adapter's, started or not
    return to_django(result)


def operation(route: Route) -> Any:
    if route.has_parameter:  # the handler reads the id from the path; Ninja documents it
        async def view_with_id(request: HttpRequest, response_id: str) -> HttpResponse:
            return await carry(request, route)

        view_with_id.__name__ = route.name
        return view_with_id

    async def view(request: HttpRequest) -> HttpResponse:
        return await carry(request, route)

    view.__name__ = route.name
    return view


def stream_event(route: Route) -> dict[str, Any]:
    """One Server-Sent Event, as OpenAPI describes a stream (each event, not each payload): its
    `data` is JSON text holding the route's stream schema or its in-band error, or OpenAI's
    closing `[DONE]`."""
    assert route.stream_schema is not None
    payload = {"type": "string", "contentMediaType": "application/json",
               "contentSchema": {"anyOf": [ref(route.stream_schema), ref(route.error_schema)]}}
    openai = route.error_schema is schemas.OpenAIError
    data = {"anyOf": [{"const": "[DONE]"}, payload]} if openai else payload
    return {"type": "object", "required": ["data"],
            "properties": {"event": {"type": "string"}, "data": data}}


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """Each field of `model` as an optional query parameter, typed by its JSON schema (Ninja
    appends them to the path's `{response_id}`)."""
    found = model.model_json_schema()
    required = set(found.get("required", ()))
    parameters = []
    for name, field in found["properties"].items():
        field = {key: value for key, value in field.items() if key != "title"}
        if "default" in field and field["default"] is None:  # absent, not `null`
            del field["default"]
        parameters.append({"name": name, "in": "query", "required": name in required,
                           "description": field.pop("description", ""), "schema": field})
    return parameters


def openapi_extra(route: Route) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if route.query_schema is not None:
        extra["parameters"] = query_parameters(route.query_schema)
    if route.request_schema is not None:
        extra["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": ref(route.request_schema)}}}
    if route.stream_schema is not None:
        extra["responses"] = {200: {
            "description": "The answer; with `\"stream\": true`, Server-Sent Events.",
            "content": {"text/event-stream": {"schema": stream_event(route)}}}}
    if route.errors and 401 in route.errors:
        extra["security"] = SECURITY
    return extra


def responses(route: Route) -> dict[int, Any]:
    found: dict[int, Any] = {200: route.response_schema or None}
    for status in route.errors:
        found[status] = route.error_schema
    return found


def register(route: Route) -> None:
    view = operation(route)
    for number, path in enumerate(route.paths()):
        documented = route.documented and number == 0
        router.add_api_operation(
            path, list(route.methods()), view, include_in_schema=documented,
            **({"response": responses(route), "summary": route.summary, "tags": list(route.tags),
                "operation_id": route.name, "openapi_extra": openapi_extra(route),
                "description": describe_errors(route)} if documented else {}),
        )


def describe_errors(route: Route) -> str:
    return "\n".join(f"- **{status}**: {ERROR_STATUSES[status]}" for status in route.errors)


for _route in ROUTES:
    register(_route)

api.add_router("", router)
