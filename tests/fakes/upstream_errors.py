"""The exact error bodies real upstreams send for an oversized prompt and an unknown model, as
scenarios for the fake upstream (and plain dicts for unit tests): one place for the wording of
llama.cpp, vLLM, OpenAI, DeepSeek, Kimi, iFlow and Anthropic-kind servers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .scenarios import Scenario, envelope_error, events, http_error

if TYPE_CHECKING:
    from .upstream import RecordedRequest


def llama_cpp_overflow(n_prompt: int = 4476, n_ctx: int = 4096) -> dict[str, Any]:
    """llama-server: HTTP 400, its own error type, the figures as fields too."""
    return {"error": {
        "code": 400,
        "message": f"request ({n_prompt} tokens) exceeds the available context size ({n_ctx} "
                   "tokens), try increasing it",
        "type": "exceed_context_size_error", "n_prompt_tokens": n_prompt, "n_ctx": n_ctx}}


def vllm_overflow(requested: int = 2100, limit: int = 2048) -> dict[str, Any]:
    """vLLM (OpenAI server, up to 0.6): HTTP 400, `object: error`, the status in `code`."""
    return {
        "object": "error",
        "message": f"This model's maximum context length is {limit} tokens. However, you "
                   f"requested {requested} tokens ({requested - 100} in the messages, 100 in the "
                   "completion). Please reduce the length of the messages or completion.",
        "type": "BadRequestError", "param": None, "code": 400}


def vllm_new_overflow(prompt: int = 40000, limit: int = 32768) -> dict[str, Any]:
    """vLLM (later versions): HTTP 400, an `error` object."""
    return {"error": {
        "message": f"This model's maximum context length is {limit} tokens. However, your "
                   f"request has {prompt} input tokens. Please reduce the length of the input "
                   "messages.",
        "type": "BadRequestError", "param": None, "code": 400}}


def openai_overflow(prompt: int = 130532, limit: int = 128000) -> dict[str, Any]:
    return {"error": {
        "message": f"This model's maximum context length is {limit} tokens. However, your "
                   f"messages resulted in {prompt} tokens. Please reduce the length of the "
                   "messages.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}


OPENAI_RESPONSES_OVERFLOW = {"error": {
    "message": "Your input exceeds the context window of this model. Please adjust your input "
               "and try again.",
    "type": "invalid_request_error", "param": "input", "code": "context_length_exceeded"}}
DEEPSEEK_OVERFLOW = {"error": {
    "message": "This model's maximum context length is 65536 tokens. However, you requested "
               "70000 tokens (69000 in the messages, 1000 in the completion). Please reduce the "
               "length of the messages or completion.",
    "type": "invalid_request_error", "param": None, "code": "invalid_request_error"}}
KIMI_OVERFLOW = {"error": {
    "message": "Invalid request: Your request exceeded model token limit: 131072",
    "type": "invalid_request_error"}}
ANTHROPIC_OVERFLOW = {"type": "error", "error": {
    "type": "invalid_request_error",
    "message": "prompt is too long: 208310 tokens > 200000 maximum"}}
IFLOW_OVERFLOW_MSG = "上下文长度超出模型限制，请缩短输入"

LLAMA_CPP_MODEL_NOT_FOUND = {"error": {  # router (multi-model) mode: a 400
    "code": 400, "message": "model 'gemma-9b' not found", "type": "invalid_request_error"}}
OPENAI_MODEL_NOT_FOUND = {"error": {
    "message": "The model `gpt-9` does not exist or you do not have access to it.",
    "type": "invalid_request_error", "param": None, "code": "model_not_found"}}
VLLM_MODEL_NOT_FOUND = {"object": "error", "message": "The model `x` does not exist.",
                        "type": "NotFoundError", "param": None, "code": 404}


# ---------------------------------------------------------------- scenarios


def llama_cpp_context_overflow(n_prompt: int = 4476, n_ctx: int = 4096) -> Scenario:
    return http_error(400, llama_cpp_overflow(n_prompt, n_ctx), name="llama_cpp_overflow")


def llama_cpp_overflow_in_stream(n_prompt: int = 4476,
                                 n_ctx: int = 4096) -> Callable[[RecordedRequest], Scenario]:
    """Older llama-server builds: a stream starts (200) and its one event is the error; a
    whole answer is the HTTP 400."""
    def answer(request: RecordedRequest) -> Scenario:
        if request.is_stream:
            return events([llama_cpp_overflow(n_prompt, n_ctx)], done=False,
                          name="llama_cpp_overflow_in_stream")
        return llama_cpp_context_overflow(n_prompt, n_ctx)
    return answer


def vllm_context_overflow(requested: int = 2100, limit: int = 2048) -> Scenario:
    return http_error(400, vllm_overflow(requested, limit), name="vllm_overflow")


def openai_context_overflow(prompt: int = 130532, limit: int = 128000) -> Scenario:
    return http_error(400, openai_overflow(prompt, limit), name="openai_overflow")


def iflow_context_overflow(code: str = "511") -> Scenario:
    return envelope_error(code, IFLOW_OVERFLOW_MSG, name=f"iflow_overflow_{code}")


def llama_cpp_model_not_found() -> Scenario:
    return http_error(400, LLAMA_CPP_MODEL_NOT_FOUND, name="llama_cpp_model_not_found")


def openai_model_not_found() -> Scenario:
    return http_error(404, OPENAI_MODEL_NOT_FOUND, name="openai_model_not_found")
