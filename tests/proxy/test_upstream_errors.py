"""What an OpenAI-compatible upstream (llama.cpp, vLLM, OpenAI …) says reaches each client in
its own words, through a real gateway and the real openai and anthropic SDKs (issue 16):

- a context overflow is OpenAI's 400 `context_length_exceeded`, and on /v1/messages Anthropic's
  invalid_request_error "prompt is too long: N tokens > M maximum" (Claude Code compacts on it),
  without cooling the account down;
- an unknown model is 404 `model_not_found`;
- a matched stop sequence is `stop_reason: "stop_sequence"` with the string;
- models imported with UPSTREAM_MODELS get DEFAULT_MAX_OUTPUT_TOKENS as their output limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from proxy.wire import thinking_within
from tests.fakes import scenarios as sc
from tests.fakes import upstream_errors as errors
from tests.fakes.anthropic_upstream import FakeAnthropic, Reply
from tests.fakes.upstream import FakeUpstream
from tests.servers import GatewayServer
from tests.sse import named_events
from tests.translate.grammar import check_anthropic_stream

KEY = "sk-local-upstream-4444"
MODEL = "local-model"
USER = [{"role": "user", "content": "Hello"}]
OUTPUT_CEILING = 5000


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(KEY, flavor="openai", models=[MODEL]) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def server(fake: FakeUpstream) -> Iterator[GatewayServer]:
    # Long cooldowns: an overflow that cooled the account down would show in the next request.
    env = {"UPSTREAM_BASE_URL": fake.base_url, "UPSTREAM_API_KEY": KEY, "UPSTREAM_MODELS": MODEL,
           "RATE_LIMIT_COOLDOWN_SECONDS": "300", "AUTH_COOLDOWN_SECONDS": "300",
           "DEFAULT_MAX_OUTPUT_TOKENS": str(OUTPUT_CEILING)}
    with GatewayServer(env) as gateway:
        yield gateway


@pytest.fixture
def upstream(fake: FakeUpstream) -> Iterator[FakeUpstream]:
    fake.reset()
    yield fake
    fake.reset()


def openai_client(server: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def anthropic_client(server: GatewayServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)


def still_serves(server: GatewayServer, upstream: FakeUpstream) -> None:
    """The account took no consequence: the very next request is served by it."""
    upstream.script(sc.text("fine"))
    answer = openai_client(server).chat.completions.create(model=MODEL, messages=USER)
    assert answer.choices[0].message.content == "fine"


OVERFLOWS = {
    "llama.cpp": (errors.llama_cpp_context_overflow(4476, 4096), (4476, 4096)),
    "llama.cpp-in-stream": (errors.llama_cpp_overflow_in_stream(5000, 2048), (5000, 2048)),
    "vllm": (errors.vllm_context_overflow(2100, 2048), (2100, 2048)),
    "openai": (errors.openai_context_overflow(130532, 128000), (130532, 128000)),
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("name", list(OVERFLOWS))
def test_overflow_is_context_length_exceeded_for_openai_clients(server, upstream, name, stream):
    scenario, _ = OVERFLOWS[name]
    upstream.script(scenario)
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(server).chat.completions.create(model=MODEL, messages=USER, stream=stream)
    assert caught.value.status_code == 400
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.type == "invalid_request_error"
    still_serves(server, upstream)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("name", list(OVERFLOWS))
def test_overflow_is_prompt_is_too_long_for_anthropic_clients(server, upstream, name, stream):
    scenario, (tokens, limit) = OVERFLOWS[name]
    upstream.script(scenario)
    client = anthropic_client(server)
    with pytest.raises(anthropic.BadRequestError) as caught:
        if stream:
            with client.messages.stream(model=MODEL, max_tokens=100, messages=USER) as events:
                list(events)
        else:
            client.messages.create(model=MODEL, max_tokens=100, messages=USER)
    assert caught.value.status_code == 400
    error = caught.value.body["error"]
    assert error == {"type": "invalid_request_error",
                     "message": f"prompt is too long: {tokens} tokens > {limit} maximum"}
    still_serves(server, upstream)


def test_an_overflow_without_figures_still_gets_consistent_ones(server, upstream):
    upstream.script(sc.http_error(400, errors.OPENAI_RESPONSES_OVERFLOW))
    response = httpx.post(server.url + "/v1/messages", timeout=30, json={
        "model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "x" * 4000}]})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("prompt is too long: ")
    tokens, limit = (int(n) for n in message.removeprefix("prompt is too long: ")
                     .removesuffix(" maximum").split(" tokens > "))
    assert tokens >= 1000 and limit < tokens  # our estimate of the prompt, over a maximum


def test_iflow_overflow_envelope_is_prompt_is_too_long(gateway, fake_iflow):
    fake_iflow.reset()
    fake_iflow.script(errors.iflow_context_overflow("511"), errors.iflow_context_overflow("413"))
    body = {"model": "glm-5", "max_tokens": 10, "messages": USER}
    response = httpx.post(gateway.url + "/v1/messages", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    # glm-5's context length from the catalogue, and a prompt count over it.
    assert error["message"] == "prompt is too long: 200001 tokens > 200000 maximum"
    chat = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                      json={"model": "glm-5", "messages": USER})
    assert chat.status_code == 400
    assert chat.json()["error"]["code"] == "context_length_exceeded"
    assert chat.json()["error"]["message"] == errors.IFLOW_OVERFLOW_MSG
    fake_iflow.reset()


@pytest.mark.parametrize("scenario", [errors.llama_cpp_model_not_found(),
                                      errors.openai_model_not_found()],
                         ids=["llama.cpp-400", "openai-404"])
def test_an_upstream_model_not_found_is_404_model_not_found(server, upstream, scenario):
    upstream.script(scenario, scenario)
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client(server).chat.completions.create(model=MODEL, messages=USER)
    assert caught.value.code == "model_not_found"
    with pytest.raises(anthropic.NotFoundError) as anthropic_caught:
        anthropic_client(server).messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert anthropic_caught.value.body["error"]["type"] == "not_found_error"
    still_serves(server, upstream)


def stopped_by(word: str, *, field: str) -> sc.Scenario:
    """An answer that names the matched stop string (vLLM: the choice's `stop_reason`;
    llama-server --verbose: `stopping_word` and `stop_type: "word"` in `__verbose`, on the whole
    answer or the first chunk of the last batch)."""
    extra = {"stop_reason": word} if field == "vllm" else {}
    top = {"__verbose": {"stop_type": "word", "stopping_word": word}} \
        if field == "llama.cpp" else {}

    def answer(request) -> sc.Scenario:
        if request.is_stream:
            return sc.events([
                {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "The "}}]},
                {**top, "choices": [{"index": 0, "delta": {"content": "answer"}}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop", **extra}]},
            ])
        return sc.raw(200, {"Content-Type": "application/json"}, [json.dumps({
            "id": "c1", "object": "chat.completion", "created": 1, "model": MODEL, **top,
            "choices": [{"index": 0, "finish_reason": "stop", **extra,
                         "message": {"role": "assistant", "content": "The answer"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}).encode()],
            framing="length")
    return answer  # type: ignore[return-value]


@pytest.mark.parametrize("field", ["vllm", "llama.cpp"])
def test_a_matched_stop_sequence_is_reported(server, upstream, field):
    upstream.script(stopped_by("</answer>", field=field), stopped_by("</answer>", field=field))
    client = anthropic_client(server)
    message = client.messages.create(model=MODEL, max_tokens=50, messages=USER,
                                     stop_sequences=["</answer>", "\nUser:"])
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "</answer>")
    assert upstream.chat_requests[-1].json["stop"] == ["</answer>", "\nUser:"]
    response = httpx.post(server.url + "/v1/messages", timeout=30, json={
        "model": MODEL, "max_tokens": 50, "messages": USER, "stream": True,
        "stop_sequences": ["</answer>"]})
    events = named_events(response.content)
    check_anthropic_stream(events)
    delta = next(data for name, data in events if name == "message_delta")["delta"]
    assert delta == {"stop_reason": "stop_sequence", "stop_sequence": "</answer>"}


def test_imported_models_get_the_default_output_limit(server, upstream):
    upstream.script(sc.text("ok"), sc.text("ok"), sc.text("ok"), sc.text("ok"))
    with anthropic_client(server).messages.stream(model=MODEL, max_tokens=32000,
                                                  messages=USER) as stream:  # as Claude Code
        stream.get_final_message()
    assert upstream.chat_requests[-1].json["max_tokens"] == OUTPUT_CEILING
    anthropic_client(server).messages.create(model=MODEL, max_tokens=300, messages=USER)
    assert upstream.chat_requests[-1].json["max_tokens"] == 300
    openai_client(server).chat.completions.create(model=MODEL, messages=USER, max_tokens=32000)
    assert upstream.chat_requests[-1].json["max_tokens"] == OUTPUT_CEILING
    openai_client(server).chat.completions.create(model=MODEL, messages=USER)
    assert "max_tokens" not in upstream.chat_requests[-1].json  # the upstream's own default


# ---- an Anthropic-compatible upstream (passthrough): llama.cpp's /v1/messages ------------------

ANTHROPIC_KEY = "sk-ant-overflow-6666"


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(ANTHROPIC_KEY, models=["gemma"]) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def anthropic_server(fake_anthropic: FakeAnthropic) -> Iterator[GatewayServer]:
    gateway = GatewayServer()
    gateway.cli("addaccount", "--provider", "anthropic", "--label", "llama.cpp",
                "--base-url", fake_anthropic.url, "--api-key", "-", "--models", "gemma",
                stdin=ANTHROPIC_KEY + "\n")
    with gateway:
        yield gateway


@pytest.mark.parametrize("reply", [
    Reply(status=400, error=errors.llama_cpp_overflow(3000, 2048), name="llama.cpp"),
    Reply(status=400, error={"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "prompt is too long: 3000 tokens > 2048 maximum"}}, name="anthropic"),
], ids=["llama.cpp-shape", "anthropic-shape"])
def test_an_anthropic_upstreams_overflow_is_prompt_is_too_long(anthropic_server,
                                                               fake_anthropic, reply):
    fake_anthropic.reset()
    fake_anthropic.script(reply, reply)
    with pytest.raises(anthropic.BadRequestError) as caught:
        anthropic_client(anthropic_server).messages.create(model="gemma", max_tokens=10,
                                                           messages=USER)
    assert caught.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "prompt is too long: 3000 tokens > 2048 maximum"}
    with pytest.raises(openai.BadRequestError) as chat_caught:  # an OpenAI client, bridged
        openai_client(anthropic_server).chat.completions.create(model="gemma", messages=USER)
    assert chat_caught.value.code == "context_length_exceeded"


# ---- Responses API clients (Codex) ---------------------------------------------------------------


def test_responses_clients_get_context_length_exceeded_and_the_output_limit(server, upstream):
    upstream.script(errors.llama_cpp_context_overflow(), sc.text("ok"))
    client = openai_client(server)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="hi")
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.type == "invalid_request_error"
    client.responses.create(model=MODEL, input="hi", max_output_tokens=32000)
    sent = upstream.chat_requests[-1].json
    assert sent.get("max_tokens", sent.get("max_completion_tokens")) == OUTPUT_CEILING


def test_the_passthrough_clamp_keeps_an_extended_thinking_budget_valid(anthropic_server,
                                                                         fake_anthropic):
    """Claude Code's max thinking: max_tokens 32000 with budget_tokens 31999. Clamped to the
    model's output limit (DEFAULT_MAX_OUTPUT_TOKENS here), the budget must come down too:
    Anthropic-compatible servers refuse budget_tokens >= max_tokens."""
    fake_anthropic.reset()
    for budget, expected in ((31999, {"type": "enabled", "budget_tokens": 8191}),
                             (4000, {"type": "enabled", "budget_tokens": 4000})):
        response = httpx.post(anthropic_server.url + "/v1/messages", timeout=30, json={
            "model": "gemma", "max_tokens": 32000, "messages": USER,
            "thinking": {"type": "enabled", "budget_tokens": budget}})
        assert response.status_code == 200, response.text
        sent = json.loads(fake_anthropic.messages_requests[-1].body)
        assert sent["max_tokens"] == 8192
        assert sent["thinking"] == expected


@pytest.mark.parametrize(("thinking", "limit", "expected"), [
    ({"type": "enabled", "budget_tokens": 31999}, 8192,
     {"type": "enabled", "budget_tokens": 8191}),
    ({"type": "enabled", "budget_tokens": 2000}, 8192, None),  # already below
    ({"type": "enabled", "budget_tokens": 2000}, 1000, {"type": "disabled"}),  # under 1024
    ({"type": "adaptive"}, 8192, None),
    ({"type": "enabled", "budget_tokens": 31999}, None, None),  # max_tokens not clamped
])
def test_thinking_within(thinking, limit, expected):
    assert thinking_within({"thinking": thinking, "max_tokens": 32000}, limit) == expected
