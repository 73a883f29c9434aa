"""OpenAI chat completion (non-streaming) -> Responses `response` object.

Output items in the order a model produces them: `reasoning` (summary = the upstream's
reasoning text, encrypted_content = the same text for the round trip), one `message` with an
`output_text` part, then a `function_call` (or `custom_tool_call`) per tool call. Ids are
derived from the response id (responses_items.item_id), so the translator is deterministic and
the stream's final response is identical for the same content.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.translate.anthropic_response import reasoning_text
from proxy.translate.responses_items import (
    build_response,
    call_id,
    call_item,
    final_status,
    item_id,
    message_item,
    reasoning_item,
    responses_usage,
)
from proxy.translate.responses_request import ResponsesTranslation
from proxy.translate.tokens import estimate_text_tokens
from proxy.translate.upstream_chat import first_message, message_calls, message_text


def _arguments(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # a few servers send the object itself
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return ""


def _tool_calls(message: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(call id or "", upstream name, arguments) for each usable call."""
    return [
        (call["id"] if isinstance(call.get("id"), str) else "", name,
         _arguments(function.get("arguments")))
        for _, call, function, name in message_calls(message)
    ]


def openai_to_responses(
    resp: Any,
    request: ResponsesTranslation,
    *,
    response_id: str,
    created_at: int,
    model: str | None = None,
    input_tokens: int = 0,
) -> dict[str, Any]:
    """`model`: the name to report (default: the one the client asked for); `input_tokens`:
    the estimate used when the upstream reports no usage."""
    choice, message = first_message(resp)

    output: list[dict[str, Any]] = []
    produced: list[str] = []
    thinking = reasoning_text(message)
    if thinking:
        output.append(reasoning_item(item_id("rs", response_id, len(output)), thinking))
        produced.append(thinking)
    text = message_text(message.get("content"))
    if text:
        output.append(message_item(item_id("msg", response_id, len(output)), text))
        produced.append(text)
    for ident, name, arguments in _tool_calls(message):
        position = len(output)
        output.append(call_item(item_id("fc", response_id, position),
                                ident or call_id(response_id, position), name, arguments,
                                request.tools))
        produced.append(arguments)

    status, details = final_status(choice.get("finish_reason"))
    if status == "incomplete" and output:
        output[-1]["status"] = "incomplete"
    usage = responses_usage(resp.get("usage"), input_estimate=input_tokens,
                            output_estimate=estimate_text_tokens("".join(produced)))
    return build_response(request.echo, response_id=response_id, created_at=created_at,
                          model=model or request.model, status=status, output=output,
                          usage=usage, incomplete_details=details)
