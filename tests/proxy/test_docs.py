"""API docs: Swagger UI at /docs and ReDoc at /redoc, served by `iflow2api serve` with every
asset from the server itself (no CDN)."""

from __future__ import annotations

import json
import re
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.e2e.browser import chromium, missing_reason
from tests.fakes import scenarios as sc

ATTRIBUTES = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)


def local_assets(base: str, html: str) -> list[str]:
    """Every src/href of the page as an absolute URL; all must be on the server itself."""
    origin = urlsplit(base)
    urls = [urljoin(base, value) for value in ATTRIBUTES.findall(html)]
    assert urls
    for url in urls:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == (origin.scheme, origin.netloc), url
    return urls


@pytest.mark.parametrize(("path", "script"), [("/redoc", "redoc.standalone.js"),
                                              ("/docs", "swagger-ui-bundle.js")])
def test_docs_pages_load_everything_from_the_server(gateway, path, script):
    page = httpx.get(gateway.url + path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assets = local_assets(gateway.url + path, page.text)
    assert any(url.endswith(script) for url in assets)
    for url in assets:
        assert httpx.get(url, follow_redirects=True).status_code == 200, url  # links too


def test_redoc_forbids_outside_resources(gateway):
    csp = httpx.get(gateway.url + "/redoc").headers["content-security-policy"]
    assert "default-src 'self'" in csp and "img-src 'self' data:" in csp
    assert "http" not in csp


def test_redoc_reads_the_schema_with_both_apis(gateway):
    html = httpx.get(gateway.url + "/redoc").text
    url = re.search(r'data-spec-url="([^"]+)"', html)[1]  # proxy/static/proxy/redoc-init.js
    schema = httpx.get(urljoin(gateway.url, url)).json()
    operations = {op["summary"] for item in schema["paths"].values() for op in item.values()}
    assert {"Chat Completions (OpenAI)", "Messages (Anthropic)", "List models"} <= operations
    assert {"OpenAI", "Anthropic"} <= {tag for item in schema["paths"].values()
                                      for op in item.values() for tag in op.get("tags", [])}


@pytest.mark.e2e
@pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))
@pytest.mark.parametrize(("path", "expect"), [
    ("/redoc", "Messages (Anthropic)"), ("/docs", "Chat Completions (OpenAI)")])
def test_docs_in_a_browser_touch_no_other_origin(gateway, path, expect):
    requested: list[str] = []
    blocked: list[str] = []  # refused by the page's Content-Security-Policy: never sent
    problems: list[str] = []
    with chromium() as browser:
        context = browser.new_context()
        page = context.new_page()
        page.on("request", lambda request: requested.append(request.url))
        page.on("requestfailed", lambda request: blocked.append(request.url)
                if request.failure == "csp" else None)
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        page.goto(gateway.url + path)
        page.locator(f"h2:has-text('{expect}'), .opblock-summary-description:has-text('{expect}')"
                     ).first.wait_for(timeout=15_000)
        page.wait_for_timeout(500)  # late images (the Redocly logo) would show up here
        context.close()
    outside = [url for url in requested
               if not url.startswith((gateway.url + "/", "data:", "blob:")) and url not in blocked]
    assert not outside
    # ReDoc's Redocly logo (cdn.redoc.ly) is left out of the script we serve: nothing is
    # refused, nothing fails (issue 17).
    assert not blocked and not problems


# --- The OpenAPI document: derived from the route table (proxy/routes.py), typed bodies ------

DOCUMENTED = {  # path: (method, request body, 200 body, error body, statuses it must list)
    "/v1/chat/completions": ("post", "ChatCompletionRequest", "ChatCompletion", "OpenAIError",
                             {400, 401, 403, 404, 413, 429, 502, 503}),
    "/v1/messages": ("post", "MessagesRequest", "Message", "AnthropicError",
                     {400, 401, 403, 404, 413, 429, 502, 503}),
    "/v1/messages/count_tokens": ("post", "CountTokensRequest", "TokenCount", "AnthropicError",
                                  {400, 401, 413}),
    "/v1/models": ("get", None, "ModelList", "OpenAIError", {401}),
    "/health": ("get", None, "Health", "OpenAIError", set()),
}


def component(schema: dict, ref: str) -> dict:
    assert ref.startswith("#/components/schemas/"), ref
    return schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]


def ref_name(content: dict) -> str:
    return content["schema"]["$ref"].rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def openapi(gateway) -> dict:
    return httpx.get(gateway.url + "/openapi.json").json()


def test_openapi_documents_each_route_with_typed_bodies(openapi):
    assert set(DOCUMENTED) <= set(openapi["paths"])
    assert not {p for p in openapi["paths"] if p.startswith(("/chat", "/messages", "/models"))}
    for path, (method, request, answer, error, statuses) in DOCUMENTED.items():
        operation = openapi["paths"][path][method]
        if request is not None:
            body = operation["requestBody"]["content"]["application/json"]
            assert ref_name(body) == request
            fields = component(openapi, body["schema"]["$ref"])
            assert {"model", "messages"} <= set(fields["properties"])
            assert fields.get("additionalProperties") is True  # clients' extra fields pass
        ok = operation["responses"]["200"]["content"]["application/json"]
        assert ref_name(ok) == answer
        assert component(openapi, ok["schema"]["$ref"])["properties"]
        documented_errors = {int(s) for s in operation["responses"] if s != "200"}
        assert statuses <= documented_errors, path
        for status in documented_errors:
            assert ref_name(operation["responses"][str(status)]["content"]["application/json"]
                            ) == error


def test_openapi_typed_details(openapi):
    chat = component(openapi, "#/components/schemas/ChatCompletionRequest")
    assert set(chat["required"]) == {"model", "messages"}
    message = component(openapi, "#/components/schemas/ChatMessage")
    assert "assistant" in message["properties"]["role"]["enum"]
    messages = component(openapi, "#/components/schemas/MessagesRequest")
    assert set(messages["required"]) == {"model", "messages", "max_tokens"}
    streams = openapi["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert "#/components/schemas/ChatCompletionChunk" in json.dumps(streams["text/event-stream"])
    error = component(openapi, "#/components/schemas/AnthropicError")
    assert error["properties"]["type"]["const"] == "error"


def test_openapi_security_schemes(openapi):
    schemes = openapi["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header",
                                 "name": "x-api-key"}
    for path in ("/v1/chat/completions", "/v1/messages", "/v1/models"):
        security = next(iter(openapi["paths"][path].values()))["security"]
        assert {"bearer": []} in security and {"apiKey": []} in security
        assert {} in security  # an instance without client keys asks for none
    assert "security" not in openapi["paths"]["/health"]["get"]


def test_openapi_input_items_query_parameters(openapi):
    """The parameters GET …/input_items reads, with the handler's own bounds and defaults."""
    from proxy import responses_stored as handler

    operation = openapi["paths"]["/v1/responses/{response_id}/input_items"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert parameters["response_id"]["in"] == "path" and parameters["response_id"]["required"]
    query = {name: p for name, p in parameters.items() if p["in"] == "query"}
    assert set(query) == {"order", "limit", "after", "before"}
    assert not any(p["required"] for p in query.values())
    assert all(p["description"] for p in query.values())
    assert query["order"]["schema"] == {"type": "string", "enum": list(handler.ORDERS),
                                        "default": handler.DEFAULT_ORDER}
    assert query["limit"]["schema"] == {"type": "integer", "minimum": 1,
                                        "maximum": handler.MAX_LIMIT,
                                        "default": handler.DEFAULT_LIMIT}
    for cursor in ("after", "before"):
        assert query[cursor]["schema"] == {"type": "string"}  # absent, never `null`


def test_real_bodies_match_the_documented_schemas(gateway, upstream):
    """The schemas the document is made from accept what the gateway really answers."""
    from proxy import schemas

    schemas.Health.model_validate(httpx.get(gateway.url + "/health").json())
    schemas.ModelList.model_validate(httpx.get(gateway.url + "/v1/models").json())
    upstream.script(sc.text("documented"), sc.text("documented too"))
    chat = httpx.post(gateway.url + "/v1/chat/completions", timeout=30, json={
        "model": "glm-5", "messages": [{"role": "user", "content": "hi"}]})
    schemas.ChatCompletion.model_validate(chat.json())
    message = httpx.post(gateway.url + "/v1/messages", timeout=30, json={
        "model": "glm-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
    schemas.Message.model_validate(message.json())
    tokens = httpx.post(gateway.url + "/v1/messages/count_tokens", timeout=30, json={
        "model": "glm-5", "messages": [{"role": "user", "content": "hi"}]})
    schemas.TokenCount.model_validate(tokens.json())
    bad = httpx.post(gateway.url + "/v1/chat/completions", content=b"{", timeout=30)
    schemas.OpenAIError.model_validate(bad.json())
    bad = httpx.post(gateway.url + "/v1/messages", content=b"{", timeout=30)
    schemas.AnthropicError.model_validate(bad.json())
