"""Every upstream's "prompt too long" and "model not found", in its own words (the exact bodies
llama.cpp, vLLM, OpenAI, DeepSeek, Kimi, iFlow and Anthropic-kind servers send), mapped to one
error: 400 `context_length_exceeded` with the figures when stated, 404 `model_not_found`; neither
touches the account."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes import upstream_errors as errors
from upstream.errors import context_figures, looks_like_model_missing
from upstream.providers import anthropic, iflow, openai


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


LLAMA_CPP_OVERFLOW = errors.llama_cpp_overflow()
VLLM_OLD_OVERFLOW = errors.vllm_overflow()
VLLM_OVERFLOW = errors.vllm_new_overflow()
OPENAI_OVERFLOW = errors.openai_overflow()
OPENAI_RESPONSES_OVERFLOW = errors.OPENAI_RESPONSES_OVERFLOW
DEEPSEEK_OVERFLOW = errors.DEEPSEEK_OVERFLOW
KIMI_OVERFLOW = errors.KIMI_OVERFLOW
ANTHROPIC_OVERFLOW = errors.ANTHROPIC_OVERFLOW


@pytest.mark.parametrize(("status", "body", "figures"), [
    (400, LLAMA_CPP_OVERFLOW, (4476, 4096)),
    (500, {"error": {"code": 500, "type": "server_error", "message":
                     "the request exceeds the available context size, try increasing the "
                     "context size or enable context shift"}}, (None, None)),  # older builds
    (400, VLLM_OLD_OVERFLOW, (2100, 2048)),
    (400, VLLM_OVERFLOW, (40000, 32768)),
    (400, OPENAI_OVERFLOW, (130532, 128000)),
    (400, OPENAI_RESPONSES_OVERFLOW, (None, None)),
    (400, DEEPSEEK_OVERFLOW, (70000, 65536)),
    (400, KIMI_OVERFLOW, (None, 131072)),
    (400, ANTHROPIC_OVERFLOW, (208310, 200000)),
    (400, {"error": {"code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": 9000,
                     "n_ctx": 4096, "message": "input (9000 tokens) is larger than the max "
                     "context size (4096 tokens). skipping"}}, (9000, 4096)),  # llama.cpp too
])
def test_openai_compatible_overflows_are_context_length_exceeded(status, body, figures):
    err = openai.error_from_response(status, {}, dumps(body))
    assert (err.status, err.code, err.account_action) == (400, "context_length_exceeded", None)
    assert (err.prompt_tokens, err.context_limit) == figures
    assert err.message  # the upstream's own words are kept


@pytest.mark.parametrize("body", [LLAMA_CPP_OVERFLOW, VLLM_OVERFLOW, OPENAI_OVERFLOW])
def test_an_overflow_inside_a_200_stream_is_mapped_the_same(body):
    err = openai.error_from_payload(body)
    assert err is not None
    assert (err.status, err.code, err.account_action) == (400, "context_length_exceeded", None)


@pytest.mark.parametrize("payload", [
    {"status": "511", "msg": errors.IFLOW_OVERFLOW_MSG, "body": None},
    {"status": "413", "msg": "Request too large", "body": None},
])
def test_iflow_envelope_overflows_are_400_context_length_exceeded(payload):
    err = iflow.error_from_payload(payload)
    assert err is not None
    assert (err.status, err.code, err.account_action) == (400, "context_length_exceeded", None)
    assert err.message == payload["msg"]


def test_iflow_http_overflow_keeps_the_figures():
    err = iflow.error_from_response(400, {}, dumps(OPENAI_OVERFLOW))
    assert (err.status, err.code) == (400, "context_length_exceeded")
    assert (err.prompt_tokens, err.context_limit) == (130532, 128000)


@pytest.mark.parametrize(("status", "body"), [
    (400, errors.LLAMA_CPP_MODEL_NOT_FOUND),  # llama.cpp's router mode
    (404, errors.OPENAI_MODEL_NOT_FOUND),
    (404, errors.VLLM_MODEL_NOT_FOUND),
    (404, {"error": "model \"llama9\" not found, try pulling it first"}),  # Ollama
])
def test_model_not_found_is_404_without_touching_the_account(status, body):
    err = openai.error_from_response(status, {}, dumps(body))
    assert (err.status, err.code, err.account_action) == (404, "model_not_found", None)


@pytest.mark.parametrize("message", [
    "model does not support tools",
    "Invalid model parameter: temperature must be <= 2",
    "messages: file not found in the upload store",
])
def test_other_400s_about_models_stay_400(message):
    err = openai.error_from_response(400, {}, dumps({"error": {"message": message}}))
    assert err.status == 400 and err.code != "model_not_found"
    assert not looks_like_model_missing(message)


def test_figures_from_llama_cpp_fields_win_over_the_wording():
    assert context_figures("request (1 tokens) exceeds the available context size (2 tokens)",
                           {"n_prompt_tokens": 10, "n_ctx": 8}) == (10, 8)
    assert context_figures("nothing to read here") == (None, None)


def test_llama_cpp_anthropic_api_overflow_keeps_its_figures():
    """llama.cpp's /v1/messages answers with its own error shape, not Anthropic's: no native
    document to pass through, so the gateway words it (with the server's figures)."""
    err = anthropic.error_from_response(400, {}, dumps(LLAMA_CPP_OVERFLOW))
    assert (err.status, err.code, err.account_action) == (400, "context_length_exceeded", None)
    assert (err.prompt_tokens, err.context_limit) == (4476, 4096)
    assert err.native is None


def test_an_anthropic_upstreams_own_overflow_passes_through_with_its_figures():
    err = anthropic.error_from_response(400, {}, dumps(ANTHROPIC_OVERFLOW))
    assert (err.status, err.code) == (400, "context_length_exceeded")
    assert (err.prompt_tokens, err.context_limit) == (208310, 200000)
    assert err.native == ANTHROPIC_OVERFLOW


def test_llama_cpp_router_model_not_found_on_its_anthropic_api():
    err = anthropic.error_from_response(400, {}, dumps(errors.LLAMA_CPP_MODEL_NOT_FOUND))
    assert (err.status, err.code, err.account_action) == (404, "model_not_found", None)
