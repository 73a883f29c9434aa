"""Hostile request bodies on the three JSON endpoints: deep nesting, lone surrogates, NaN, huge
echoed values and huge message counts are 400s in the client's own error shape (never a 500, a
traceback, or a stalled server), and nothing of them reaches the upstream."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.servers import GatewayServer

KEY = "sk-openai-compatible"
MODEL = "omega-chat"
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
COUNT = "/v1/messages/count_tokens"
ENDPOINTS = [CHAT, MESSAGES, COUNT]
ECHO_LIMIT = 200  # an error message quoting a client value stays short


@pytest.fixture(scope="module")
def openai_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(KEY, flavor="openai", models=[MODEL]) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(openai_upstream: FakeUpstream) -> Iterator[GatewayServer]:
    """The OpenAI-compatible provider: its request builder is where a lone surrogate crashed."""
    env = {"UPSTREAM_BASE_URL": openai_upstream.base_url, "UPSTREAM_API_KEY": KEY,
           "UPSTREAM_MODELS": MODEL, "DEFAULT_MODEL": MODEL}
    with GatewayServer(env) as gateway:
        yield gateway


@pytest.fixture
def fake(openai_upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    openai_upstream.reset()
    yield openai_upstream
    openai_upstream.reset()


def body_with(endpoint: str, message_json: str, extra: str = "") -> bytes:
    """A request body for `endpoint` (raw JSON text, so it can hold what json.dumps refuses)
    with one message whose JSON text is `message_json`."""
    head = f'"model":"{MODEL}"' + ("" if endpoint == CHAT else ',"max_tokens":16')
    return f'{{{head},"messages":[{message_json}]{extra}}}'.encode()


def post(gateway: GatewayServer, endpoint: str, content: bytes) -> httpx.Response:
    return httpx.post(gateway.url + endpoint, content=content, timeout=60,
                      headers={"content-type": "application/json"})


def assert_client_error(response: httpx.Response, endpoint: str, status: int = 400) -> str:
    """The error is in the endpoint's client shape; returns its message."""
    assert response.status_code == status, response.text[:500]
    data = response.json()
    if endpoint == CHAT:
        assert set(data) == {"error"}
        assert set(data["error"]) == {"message", "type", "param", "code"}
        message = data["error"]["message"]
    else:
        assert data["type"] == "error"
        assert data["error"]["type"] in {"invalid_request_error", "not_found_error"}
        message = data["error"]["message"]
    assert isinstance(message, str) and message
    return message


def deep(kind: str, depth: int) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def no_traceback(gateway: GatewayServer) -> None:
    log = gateway.output()
    assert "Traceback" not in log and "RecursionError" not in log, log[-3000:]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("kind", ["array", "object"])
def test_100000_deep_nesting_is_400(server, fake, endpoint, kind):
    content = body_with(endpoint, f'{{"role":"user","content":{deep(kind, 100_000)}}}')
    message = assert_client_error(post(server, endpoint, content), endpoint)
    assert "deep" in message or "MAX_JSON_DEPTH" in message
    assert fake.chat_requests == []
    no_traceback(server)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("where", ["message", "tool schema"])
def test_1000_levels_inside_a_message_or_tool_schema_is_400(server, fake, endpoint, where):
    nested = deep("object", 1000)
    hi, extra = '{"role":"user","content":"hi"}', ""
    if where == "message" and endpoint == CHAT:
        message = f'{{"role":"user","content":[{{"type":"text","text":"x","n":{nested}}}]}}'
    elif where == "message":
        message = ('{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f",'
                   f'"input":{nested}}}]}},{hi}')
    elif endpoint == CHAT:
        message = hi
        extra = f',"tools":[{{"type":"function","function":{{"name":"f","parameters":{nested}}}}}]'
    else:
        message = hi
        extra = f',"tools":[{{"name":"f","input_schema":{nested}}}]'
    response = post(server, endpoint, body_with(endpoint, message, extra))
    assert "MAX_JSON_DEPTH" in assert_client_error(response, endpoint)
    assert fake.chat_requests == []
    no_traceback(server)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("text", ["\\ud800", "a\\udfffb", "\\ud800\\u0041"])
def test_lone_surrogate_is_400(server, fake, endpoint, text):
    content = body_with(endpoint, f'{{"role":"user","content":"{text}"}}')
    assert_client_error(post(server, endpoint, content), endpoint)
    assert fake.chat_requests == []
    no_traceback(server)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_400_and_not_forwarded(server, fake, endpoint, constant):
    content = body_with(endpoint, '{"role":"user","content":"hi"}', f',"temperature":{constant}')
    assert_client_error(post(server, endpoint, content), endpoint)
    assert fake.chat_requests == []


def test_a_valid_surrogate_pair_is_served(server, fake):
    """Only lone halves are refused: an escaped emoji is text like any other."""
    response = post(server, CHAT, body_with(CHAT, '{"role":"user","content":"\\ud83d\\ude00"}'))
    assert response.status_code == 200, response.text
    assert "\U0001f600" in json.loads(fake.chat_requests[-1].body)["messages"][-1]["content"]


def test_a_huge_model_name_is_not_echoed_in_full(server, fake):
    name = "m" * 1_000_000
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
    message = raised.value.body["message"]
    assert "mmmm" in message and "…" in message and len(message) < ECHO_LIMIT + 300


def test_a_huge_client_value_in_a_translation_error_is_truncated(server, fake):
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model=MODEL, max_tokens=16,
                               messages=[{"role": "user", "content": "hi"}],
                               tool_choice={"type": "x" * 1_000_000})
    message = raised.value.body["error"]["message"]
    assert "xxxx" in message and "…" in message and len(message) < ECHO_LIMIT + 300


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_sdk_clients_get_400_for_deep_nesting(server, fake, endpoint):
    nested = json.loads(deep("array", 900))  # within json's own recursion limit
    if endpoint == CHAT:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=MODEL, messages=[
                {"role": "user", "content": "hi"}], extra_body={"metadata": nested})
        return
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    call = client.messages.count_tokens if endpoint == COUNT else client.messages.create
    kwargs = {} if endpoint == COUNT else {"max_tokens": 16}
    with pytest.raises(anthropic.BadRequestError) as raised:
        call(model=MODEL, messages=[{"role": "user", "content": "hi"}],
             tools=[{"name": "f", "input_schema": {"type": "object", "x": nested}}], **kwargs)
    assert "MAX_JSON_DEPTH" in raised.value.body["error"]["message"]


def many(item: str, count: int) -> str:
    return ",".join([item] * count)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("setting", "message", "extra"), [
    ("MAX_REQUEST_MESSAGES", many('{"role":"user","content":"hi"}', 10_001), ""),
    ("MAX_REQUEST_CONTENT_BLOCKS",
     '{"role":"user","content":[' + many('{"type":"text","text":"a"}', 50_001) + "]}", ""),
    ("MAX_REQUEST_TOOLS", '{"role":"user","content":"hi"}',
     ',"tools":[' + many('{"name":"f","input_schema":{}}', 1_001) + "]"),
])
def test_counts_beyond_the_limits_are_400_naming_the_setting(
        server, fake, endpoint, setting, message, extra):
    response = post(server, endpoint, body_with(endpoint, message, extra))
    assert setting in assert_client_error(response, endpoint)
    assert fake.chat_requests == []


def test_a_long_conversation_within_the_limits_is_served(server, fake):
    turns = many('{"role":"user","content":"q"},{"role":"assistant","content":"a"}', 4_000)
    response = post(server, MESSAGES, body_with(MESSAGES, turns + ',{"role":"user","content":"z"}'))
    assert response.status_code == 200, response.text[:500]
    assert len(json.loads(fake.chat_requests[-1].body)["messages"]) == 8_001


def test_limit_errors_speak_the_clients_language(server, fake):
    content = body_with(CHAT, f'{{"role":"user","content":{deep("array", 200)}}}')
    response = httpx.post(server.url + CHAT, content=content, timeout=30, headers={
        "content-type": "application/json", "accept-language": "zh-CN"})
    message = assert_client_error(response, CHAT)
    assert "嵌套" in message and "MAX_JSON_DEPTH" in message


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("endpoint", [MESSAGES, CHAT])
def test_a_body_with_600k_messages_is_refused_while_health_stays_responsive(
        server, fake, endpoint):
    tiny = '{"role":"user","content":"hi"},'
    content = body_with(endpoint, (tiny * 600_000)[:-1])
    assert len(content) > 16 * 1024 * 1024
    assert server.process is not None
    before = rss_kib(server.process.pid)
    answered: list[float] = []
    probe_errors: list[Exception] = []
    done = threading.Event()

    def probe() -> None:
        # Health probes for as long as the big requests are handled: each must answer.
        while not done.is_set():
            try:
                started = time.monotonic()
                httpx.get(server.url + "/health", timeout=10).raise_for_status()
                answered.append(time.monotonic() - started)
            except httpx.HTTPError as exc:
                probe_errors.append(exc)
            time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        responses = [post(server, endpoint, content) for _ in range(3)]
    finally:
        done.set()
        prober.join(15)
    for response in responses:
        message = assert_client_error(response, endpoint)
        assert "MAX_" in message, message
    assert not probe_errors and answered
    # Generous: a health probe must answer within 2 s even while the big bodies are handled.
    assert max(answered) < 2.0, sorted(answered)[-5:]
    growth_mib = (rss_kib(server.process.pid) - before) / 1024
    assert growth_mib < 4 * len(content) / 2**20, growth_mib  # was ~20x the body per request
    assert fake.chat_requests == []
    no_traceback(server)


@pytest.mark.parametrize(("text", "too_deep"), [
    ('{"a":{"b":{"c":1}}}', False),  # three levels, three brackets: not walked
    ('{"a":{"b":{"c":{}}}}', True),  # four levels, four brackets
    ('{"a":{"b":[1]},"s":"[[[[{{{{"}', False),  # brackets in a string: walked, and fine
    ('{"a":[1],"b":[2],"c":[3],"d":{"e":[4]}}', False),  # many brackets, three levels
    ('{"s":"{{","a":[[[{}]]]}', True),  # five levels: the walk finds them
])
def test_the_depth_limit_holds_whether_or_not_the_body_is_walked(settings, text, too_deep):
    from proxy.errors import ApiError
    from proxy.pipeline import parse_json_object

    settings.IFLOW2API = {**settings.IFLOW2API, "MAX_JSON_DEPTH": 3}
    if too_deep:
        with pytest.raises(ApiError, match="MAX_JSON_DEPTH"):
            parse_json_object(text.encode())
    else:
        assert isinstance(parse_json_object(text.encode()), dict)
