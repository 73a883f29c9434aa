"""The API's bodies as typed schemas, for the OpenAPI document (/openapi.json, /docs, /redoc).

Documentation only: the handlers read the raw body and stay the validators (a proxy keeps every
field it does not know and answers bad input in the client's own error shape). So every object
here allows extra fields, and only what the handlers themselves insist on is required.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema


class Open(BaseModel):
    """A body part that may carry fields this document does not name."""

    model_config = ConfigDict(extra="allow")


# --- OpenAI Chat Completions -----------------------------------------------------------------

class ChatMessage(Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = Field(
        None, description="Text, or content parts (text, image_url).")
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class ChatCompletionRequest(Open):
    model: str = Field(min_length=1, examples=["glm-5"])
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = Field(None, description="Answer as Server-Sent Events.")
    stream_options: dict[str, Any] | None = Field(
        None, description='`{"include_usage": true}`: a last chunk with the usage.')
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    n: int | None = Field(None, gt=0)
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    reasoning_effort: str | None = None


class Usage(Open):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(Open):
    role: Literal["assistant"]
    content: str | None = None
    reasoning_content: str | None = Field(
        None, description="The model's reasoning, when the instance passes it on.")
    tool_calls: list[dict[str, Any]] | None = None


class Choice(Open):
    index: int
    message: AssistantMessage
    finish_reason: str | None = None


class ChatCompletion(Open):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class ChunkChoice(Open):
    index: int
    delta: dict[str, Any]
    finish_reason: str | None = None


class ChatCompletionChunk(Open):
    """One `data:` event of a stream; the stream ends with `data: [DONE]`."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class OpenAIErrorDetail(Open):
    message: str
    type: str = Field(examples=["invalid_request_error"])
    param: str | None = None
    code: str | None = None


class OpenAIError(Open):
    """An error in OpenAI's shape (also as an in-band event of a stream that already began)."""

    error: OpenAIErrorDetail


# --- Models and health -----------------------------------------------------------------------

class Model(Open):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    type: Literal["model"] = "model"
    display_name: str
    created_at: str = Field(description="ISO 8601, for Anthropic clients.")


class ModelList(Open):
    object: Literal["list"]
    data: list[Model]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class Health(Open):
    status: Literal["ok", "degraded"]
    upstream_configured: bool
    accounts: int
    models: int
    version: str


# --- Anthropic Messages ----------------------------------------------------------------------

class AnthropicMessage(Open):
    role: Literal["user", "assistant"]
    content: Annotated[str, Field(min_length=1)] | list[dict[str, Any]] = Field(
        description="Text, or content blocks (text, image, tool_use, tool_result, thinking).")


class CountTokensRequest(Open):
    model: str = Field(examples=["claude-sonnet-4-6"])
    messages: list[AnthropicMessage]
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None


class MessagesRequest(CountTokensRequest):
    messages: list[AnthropicMessage] = Field(min_length=1)  # count_tokens takes none
    max_tokens: int = Field(gt=0, examples=[1024])
    stream: bool | None = Field(None, description="Answer as Server-Sent Events.")
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class AnthropicUsage(Open):
    input_tokens: int
    output_tokens: int


class Message(Open):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]]
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: AnthropicUsage


class MessageStreamEvent(Open):
    """One event of a stream (`event: <type>` then `data: {...}`): message_start,
    content_block_start/delta/stop, message_delta, message_stop, ping, error."""

    type: str


class TokenCount(Open):
    input_tokens: int = Field(ge=1)


class AnthropicErrorDetail(Open):
    type: str = Field(examples=["invalid_request_error"])
    message: str


class AnthropicError(Open):
    """An error in Anthropic's shape (also as an in-band `error` event of a stream)."""

    type: Literal["error"]
    error: AnthropicErrorDetail
    request_id: str | None = None


# --- OpenAI Responses ------------------------------------------------------------------------

class ResponsesRequest(Open):
    model: str = Field(min_length=1, examples=["glm-5"])
    input: str | list[dict[str, Any]] | None = Field(
        None, description="Text, or items: message (roles user, assistant, system, developer), "
        "function_call, function_call_output, custom_tool_call(_output), reasoning.")
    instructions: str | None = Field(
        None, description="System text; not carried over by previous_response_id.")
    previous_response_id: str | None = Field(
        None, description="Continue a stored response: its input and output come first.")
    stream: bool | None = Field(None, description="Answer as Server-Sent Events.")
    store: bool | None = Field(
        None, description="Keep the response for previous_response_id, GET and input_items "
        "(default true; RESPONSES_RETENTION_DAYS).")
    tools: list[dict[str, Any]] | None = Field(
        None, description="function, namespace and custom tools; hosted tools (web_search…) "
        "are dropped and named in the x-iflow2api-dropped-tools header.")
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(None, gt=0)
    temperature: float | None = None
    top_p: float | None = None
    reasoning: dict[str, Any] | None = Field(None, description='e.g. `{"effort": "high"}`.')
    text: dict[str, Any] | None = Field(
        None, description="`format`: text, json_object or json_schema.")
    metadata: dict[str, Any] | None = None
    background: Literal[False] | None = Field(None, description="Background mode: not supported.")


class ResponseUsage(Open):
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class Response(Open):
    id: str = Field(examples=["resp_0123456789abcdef"])
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "failed", "in_progress"]
    model: str
    output: list[dict[str, Any]] = Field(
        description="Items: reasoning, message (output_text), function_call, custom_tool_call.")
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    usage: ResponseUsage | None = None
    previous_response_id: str | None = None
    store: bool


class ResponseStreamEvent(Open):
    """One event (`event: <type>` then `data: {...}` with the same `type` and a strictly
    increasing `sequence_number`): response.created, response.in_progress,
    response.output_item.added/done, response.content_part.added/done,
    response.output_text.delta/done, response.function_call_arguments.delta/done,
    response.reasoning_summary_*; last response.completed or response.incomplete (the full
    response), or response.failed followed by error."""

    type: str
    sequence_number: int


class DeletedResponse(Open):
    id: str
    object: Literal["response"]
    deleted: Literal[True]


class InputItemList(Open):
    object: Literal["list"]
    data: list[dict[str, Any]]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class InputItemListQuery(BaseModel):
    """The query of GET /v1/responses/{response_id}/input_items, as proxy/responses_stored.py
    reads it (other parameters, such as the SDK's `include`, are accepted and ignored)."""

    order: Literal["asc", "desc"] = Field(
        "desc", description="`desc`: newest first; `asc`: oldest first.")
    limit: int = Field(20, ge=1, le=100, description="How many items a page holds at most.")
    # Optional strings, not `null`: a query parameter is present or absent.
    after: str | SkipJsonSchema[None] = Field(
        None, description="An item id: the items after it in this order.")
    before: str | SkipJsonSchema[None] = Field(
        None, description="An item id: the items just before it in this order (with `after`: "
        "the items between).")
