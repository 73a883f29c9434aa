"""The upstream's prompt-cache usage reaches every client and the request log (issue 18):
an upstream reporting cache hits its own way (DeepSeek's prompt_cache_hit_tokens) → the
anthropic SDK's cache_read_input_tokens, the openai SDK's prompt_tokens_details.cached_tokens,
streamed and not; the request log row keeps the cached tokens."""

from __future__ import annotations

import anthropic
import openai
from django.utils import timezone

from tests.fakes import scenarios as sc
from tests.proxy.test_requestlog import rows_since

MESSAGES = [{"role": "user", "content": "hi"}]
DEEPSEEK = {"prompt_tokens": 1200, "completion_tokens": 50, "total_tokens": 1250,
            "prompt_cache_hit_tokens": 1024, "prompt_cache_miss_tokens": 176}

def test_anthropic_clients_get_cache_reads(gateway, upstream):
    client = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0)
    upstream.script(sc.text("one", usage=DEEPSEEK), sc.text("two", usage=DEEPSEEK))
    message = client.messages.create(model="claude-sonnet-4-6", max_tokens=64,
                                     messages=MESSAGES)
    assert message.usage.cache_read_input_tokens == 1024
    assert message.usage.input_tokens == 176
    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=64,
                                messages=MESSAGES) as stream:
        final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens == 1024 and final.usage.input_tokens == 176

def test_openai_clients_get_cached_tokens_and_the_log_keeps_them(gateway, upstream):
    start = timezone.now()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    upstream.script(sc.text("one", usage=DEEPSEEK), sc.text("two", usage=DEEPSEEK))
    answer = client.chat.completions.create(model="glm-5", messages=MESSAGES)
    assert answer.usage.prompt_tokens_details.cached_tokens == 1024
    chunks = list(client.chat.completions.create(
        model="glm-5", messages=MESSAGES, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 1024
    rows = rows_since(gateway, start, count=2)
    assert [(r["tokens_in"], r["tokens_cached"]) for r in rows] == [(1200, 1024)] * 2


def test_a_chat_stream_is_logged_with_its_usage_even_when_the_client_did_not_ask(
        gateway, upstream):
    start = timezone.now()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    upstream.script(sc.text("one", usage=DEEPSEEK))
    chunks = list(client.chat.completions.create(model="glm-5", messages=MESSAGES,
                                                 stream=True))
    assert all(chunk.usage is None for chunk in chunks)  # it did not ask
    assert upstream.chat_requests[-1].json["stream_options"] == {"include_usage": True}
    [row] = rows_since(gateway, start)
    assert (row["tokens_in"], row["tokens_cached"]) == (1200, 1024)
