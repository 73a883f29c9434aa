"""Schema fuzzing: schemathesis reads a real `iflow2api serve`'s own /openapi.json and sends it
generated requests, valid and invalid, while a fake OpenAI-compatible provider answers normally.
Every answer must be clean: no 5xx, no traceback in the body or the server log, every error in
the client's own shape, a content type that matches the body, and (schemathesis's own checks)
statuses, bodies, stream events and headers as the document describes them.

Bounded and reproducible: a fixed seed, derandomized, IFLOW2API_FUZZ_EXAMPLES examples per
operation and phase (default 12). A longer local run: docs/testing.md."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis.strategies as st
import pytest
import schemathesis
from schemathesis import Case, Response

from tests.fakes.upstream import FakeUpstream
from tests.servers import GatewayServer

UPSTREAM_KEY = "sk-fuzz-upstream"
CLIENT_KEY = "sk-fuzz-client-0123456789"
MODEL = "glm-5"  # the default model, and the document's example
MAX_EXAMPLES = int(os.environ.get("IFLOW2API_FUZZ_EXAMPLES", "12"))
SEED = int(os.environ.get("IFLOW2API_FUZZ_SEED", "14"))
REQUEST_TIMEOUT = 30
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
COUNT = "/v1/messages/count_tokens"
TYPED_BODIES = (CHAT, MESSAGES, COUNT)
# What each operation answered during the run (read by the last test of the module).
ANSWERS: dict[str, Counter[int]] = {}


@pytest.fixture(scope="module")
def fuzz_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(UPSTREAM_KEY, flavor="openai", models=[MODEL]) as fake:
        yield fake


@pytest.fixture(scope="module")
def fuzz_server(fuzz_upstream: FakeUpstream) -> Iterator[GatewayServer]:
    env = {"UPSTREAM_BASE_URL": fuzz_upstream.base_url, "UPSTREAM_API_KEY": UPSTREAM_KEY,
           "UPSTREAM_MODELS": MODEL, "DEFAULT_MODEL": MODEL, "IFLOW2API_API_KEYS": CLIENT_KEY}
    with GatewayServer(env) as server:
        yield server


def fuzz_config(base_url: str) -> schemathesis.Config:
    """No example database on disk; all of schemathesis's response checks but the two that
    hold the document to be the validator: the handlers are (proxy/schemas.py), and a proxy
    passes on fields and values it does not know."""
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "base-url": base_url,
        "headers": {"Authorization": f"Bearer {CLIENT_KEY}"},
        "request-timeout": REQUEST_TIMEOUT,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True,
                       "database": "none"},
        "phases": {"stateful": {"enabled": False}},
        "checks": {"positive_data_acceptance": {"enabled": False},
                   "negative_data_rejection": {"enabled": False}},
    })


@pytest.fixture(scope="module")
def api_schema(fuzz_server: GatewayServer) -> Any:
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json",
                                           config=fuzz_config(fuzz_server.url))

    @schema.hook
    def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
        """Half the bodies name the served model, so they get past routing to the upstream."""
        if not isinstance(body, dict) or "model" not in body:
            return st.just(body)
        return st.sampled_from([body, {**body, "model": MODEL}])

    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32 renames the test node through `_nodeid`, which pytest 9.2 no longer
    has (it keeps `_id`): give it the attribute so the per-operation subtests can report."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def is_anthropic(path: str) -> bool:
    return path == MESSAGES or path.startswith(MESSAGES + "/")


def assert_error_shape(path: str, data: Any) -> None:
    """An error body is the shape the client's own SDK parses."""
    assert isinstance(data, dict), data
    error = data.get("error")
    assert isinstance(error, dict), data
    if is_anthropic(path):
        assert data.get("type") == "error", data
    else:
        assert {"message", "type", "param", "code"} <= set(error), data
    assert isinstance(error.get("type"), str) and error["type"], data
    assert isinstance(error.get("message"), str) and error["message"], data


def assert_clean_response(case: Case, response: Response) -> None:
    status, path = response.status_code, case.path
    body = response.content.decode("utf-8", errors="replace")
    seen = f"{case.method} {path} -> {status}: {body[:500]}"
    assert status < 500, seen
    assert "Traceback (most recent call last)" not in body, seen
    content_type = response.headers.get("content-type", [""])[0].split(";")[0].strip()
    if content_type == "text/event-stream":
        assert status == 200, seen
        return
    assert content_type == "application/json", f"{content_type!r}: {seen}"
    data = json.loads(body)
    if status >= 400:
        assert_error_shape(path, data)


@schema.parametrize()
def test_generated_requests_get_clean_answers(case: Case, fuzz_server: GatewayServer) -> None:
    log_before = len(fuzz_server.output())
    response = case.call(timeout=REQUEST_TIMEOUT)
    ANSWERS.setdefault(f"{case.method} {case.path}", Counter())[response.status_code] += 1
    assert_clean_response(case, response)
    case.validate_response(response)
    logged = fuzz_server.output()[log_before:]
    assert "Traceback" not in logged, logged[-3000:]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


@pytest.mark.parametrize("path", TYPED_BODIES)
def test_the_fuzzed_document_types_the_request_bodies(fuzz_server: GatewayServer, path: str):
    """So the run generates real messages (role, content), not bare objects."""
    document = httpx.get(fuzz_server.url + "/openapi.json").json()
    content = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    body = resolve(document, content["schema"])
    assert {"model", "messages"} <= set(body["required"])
    message = resolve(document, body["properties"]["messages"]["items"])
    assert {"role", "content"} <= set(message["properties"])


def test_the_run_got_past_validation_to_the_upstream(fuzz_upstream: FakeUpstream) -> None:
    """Generated requests reached the upstream on both APIs (a run where every body was
    refused would test only the validators)."""
    if not ANSWERS:
        pytest.skip("the fuzz run did not run in this session")
    posts = {path: dict(ANSWERS.get(f"POST {path}", {})) for path in TYPED_BODIES}
    assert all(answers.get(200) for answers in posts.values()), posts
    assert fuzz_upstream.errors == []
