"""OpenAI chat.completion.chunk stream -> Responses API stream events (docs/responses-api.md).

One `ResponsesStream` per request. Events are dicts whose `type` is also the SSE event name;
each carries a strictly increasing `sequence_number`:

    response.created, response.in_progress,
    per item: response.output_item.added ... response.output_item.done
      reasoning: reasoning_summary_part.added, reasoning_summary_text.delta*, .done,
                 reasoning_summary_part.done
      message:   content_part.added, output_text.delta*, output_text.done, content_part.done
      call:      function_call_arguments.delta*, .done
                 (custom tools: custom_tool_call_input.delta, .done - whole at the end, since
                 the input is unwrapped from the JSON arguments)
    response.completed | response.incomplete (the full response, as responses_response builds)
    or, on failure: response.failed, then error.

Reasoning and text items are opened one at a time (a switch closes the other); tool calls stay
open until the end, so interleaved fragments of parallel calls each reach their own item.
A stream that ends without a finish_reason is a failure, never a made-up completion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from proxy.translate.anthropic_response import reasoning_text
from proxy.translate.responses_items import (
    build_response,
    call_id,
    call_item,
    final_status,
    item_id,
    message_item,
    output_text_part,
    reasoning_item,
    responses_usage,
)
from proxy.translate.responses_request import ResponsesTranslation
from proxy.translate.tokens import estimate_text_tokens
from proxy.translate.upstream_chat import read_chunk

Event = dict[str, Any]
KEEPALIVE = b": keepalive\n\n"
NO_FINISH = "upstream stream ended without a finish_reason"
# ResponseError.code accepts only these (openai SDK); anything else is reported as server_error.
_RESPONSE_ERROR_CODES = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt"})


def encode_event(event: Event) -> bytes:
    """`event: <type>` + `data: <json>` + blank line."""
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


@dataclass
class _Item:
    index: int  # output_index
    kind: str  # "reasoning" | "message" | "call"
    id: str
    parts: list[str] = field(default_factory=list)
    final: dict[str, Any] | None = None  # set once done


@dataclass
class _Call:
    key: int  # upstream tool-call index
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    item: _Item | None = None


class ResponsesStream:
    keepalive = KEEPALIVE

    def __init__(self, request: ResponsesTranslation, *, response_id: str, created_at: int,
                 model: str | None = None, input_tokens: int = 0) -> None:
        self.request = request
        self.response_id = response_id
        self.created_at = created_at
        self.model = model or request.model
        self.input_tokens = input_tokens
        self.status: str | None = None  # final status, handy for logging
        self.response: dict[str, Any] | None = None  # the final response object
        self._sequence = 0
        self._started = False
        self._done = False
        self._items: list[_Item] = []
        self._open: _Item | None = None  # the open reasoning or message item
        self._calls: dict[int, _Call] = {}
        self._produced: list[str] = []
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None

    # ---- public API -------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """The upstream said it was done (a finish_reason came), or the stream already ended."""
        return self._done or self._finish is not None

    def start(self) -> list[Event]:
        """response.created and response.in_progress, if not sent yet (a stream that commits
        before the upstream's first chunk opens with them)."""
        return [] if self._done else self._start()

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        if self._done:
            return []
        events = self._start()
        if not isinstance(chunk, dict):
            return events
        reading = read_chunk(chunk)
        if reading.error is not None:  # in-band upstream error with a 200 status
            return events + self.fail(reading.error)
        if reading.usage is not None:
            self._usage = reading.usage
        for step in reading.steps:
            if step.delta is not None:
                self._delta(step.delta, events)
            if step.finish_reason:
                self._finish = step.finish_reason
        return events

    def feed_texts(self, texts: list[str]) -> list[Event]:
        """What feed() gives for text-only chunks of these texts (proxy/translate/
        text_runs.py): the message's text, nothing else."""
        if self._done:
            return []
        events = self._start()
        for text in texts:
            self._text_piece("message", text, events)
        return events

    def close(self) -> list[Event]:
        if self._done:
            return []
        if self._finish is None:
            return self.fail(NO_FINISH)
        events = self._start()
        for call in self._calls.values():
            if call.item is None and call.name:  # never got an id: synthesize one
                self._open_call(call, events)
        status, details = final_status(self._finish)
        last = max((i.index for i in self._items if i.final is None), default=None)
        for item in sorted(self._items, key=lambda i: i.index):
            if item.final is None:
                done = "incomplete" if status == "incomplete" and item.index == last else None
                self._close_item(item, events, done or "completed")
        self._done = True
        self.status = status
        self.response = self._response(status, incomplete_details=details)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        events.append(self._event(kind, response=self.response))
        return events

    def fail(self, message: str, code: str = "server_error") -> list[Event]:
        if self._done:
            return []
        events = self._start()
        self._done = True
        self.status = "failed"
        error = {"code": code if code in _RESPONSE_ERROR_CODES else "server_error",
                 "message": message}
        self.response = self._response("failed", error=error)
        events.append(self._event("response.failed", response=self.response))
        # The API's flat fields, and the nested `error` the openai SDK raises an APIError on
        # (without it the SDK's stream simply ends).
        kind = "rate_limit_error" if code == "rate_limit_exceeded" else "api_error"
        events.append(self._event("error", code=code, message=message, param=None,
                                  error={"type": kind, "code": code, "message": message,
                                         "param": None}))
        return events

    # ---- helpers ----------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        output = [item.final or self._snapshot(item) for item in self._items]
        usage = None
        if status != "in_progress":
            usage = responses_usage(
                self._usage, input_estimate=self.input_tokens,
                output_estimate=estimate_text_tokens("".join(self._produced)))
        return build_response(self.request.echo, response_id=self.response_id,
                              created_at=self.created_at, model=self.model, status=status,
                              output=output, usage=usage, **extra)

    def _start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        response = self._response("in_progress")
        return [self._event("response.created", response=response),
                self._event("response.in_progress", response=response)]

    def _snapshot(self, item: _Item, status: str = "incomplete") -> dict[str, Any]:
        """An item as it stands (for response.failed, or when it closes)."""
        text = "".join(item.parts)
        if item.kind == "reasoning":
            out = reasoning_item(item.id, text)
            out["status"] = status
            return out
        if item.kind == "message":
            return message_item(item.id, text, status)
        call = next(c for c in self._calls.values() if c.item is item)
        return call_item(item.id, call.id, call.name, text, self.request.tools, status)

    def _new_item(self, kind: str, prefix: str) -> _Item:
        index = len(self._items)
        item = _Item(index, kind, item_id(prefix, self.response_id, index))
        self._items.append(item)
        return item

    # ---- reasoning and text -----------------------------------------------------------------

    def _delta(self, delta: dict[str, Any], events: list[Event]) -> None:
        reasoning = reasoning_text(delta)
        if reasoning:
            self._text_piece("reasoning", reasoning, events)
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._text_piece("message", content, events)
        fragments = delta.get("tool_calls")
        for fragment in fragments if isinstance(fragments, list) else []:
            if isinstance(fragment, dict):
                self._tool_fragment(fragment, events)

    def _text_piece(self, kind: str, text: str, events: list[Event]) -> None:
        item = self._open
        if item is None or item.kind != kind:
            if item is not None:
                self._close_item(item, events, "completed")
            item = self._open_text(kind, events)
        item.parts.append(text)
        self._produced.append(text)
        where = {"item_id": item.id, "output_index": item.index}
        if kind == "reasoning":
            events.append(self._event("response.reasoning_summary_text.delta", **where,
                                      summary_index=0, delta=text))
        else:
            events.append(self._event("response.output_text.delta", **where, content_index=0,
                                      delta=text, logprobs=[]))

    def _open_text(self, kind: str, events: list[Event]) -> _Item:
        item = self._new_item(kind, "rs" if kind == "reasoning" else "msg")
        self._open = item
        where = {"item_id": item.id, "output_index": item.index}
        if kind == "reasoning":
            added = {"id": item.id, "type": "reasoning", "summary": [], "status": "in_progress"}
            events.append(self._event("response.output_item.added", output_index=item.index,
                                      item=added))
            events.append(self._event("response.reasoning_summary_part.added", **where,
                                      summary_index=0, part={"type": "summary_text", "text": ""}))
        else:
            added = {"id": item.id, "type": "message", "status": "in_progress",
                     "role": "assistant", "content": []}
            events.append(self._event("response.output_item.added", output_index=item.index,
                                      item=added))
            events.append(self._event("response.content_part.added", **where, content_index=0,
                                      part=output_text_part("")))
        return item

    def _close_item(self, item: _Item, events: list[Event], status: str) -> None:
        text = "".join(item.parts)
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind == "reasoning":
            part = {"type": "summary_text", "text": text}
            events.append(self._event("response.reasoning_summary_text.done", **where,
                                      summary_index=0, text=text))
            events.append(self._event("response.reasoning_summary_part.done", **where,
                                      summary_index=0, part=part))
        elif item.kind == "message":
            events.append(self._event("response.output_text.done", **where, content_index=0,
                                      text=text, logprobs=[]))
            events.append(self._event("response.content_part.done", **where, content_index=0,
                                      part=output_text_part(text)))
        item.final = self._snapshot(item, status)
        if item.kind == "call":
            self._close_call(item, events)
        if self._open is item:
            self._open = None
        events.append(self._event("response.output_item.done", output_index=item.index,
                                  item=item.final))

    # ---- tool calls -------------------------------------------------------------------------

    def _call_for(self, fragment: dict[str, Any]) -> _Call:
        key = fragment.get("index")
        ident = fragment.get("id")
        if not isinstance(key, int) or isinstance(key, bool):
            # No index (some servers): a new id means a new call, otherwise the latest call.
            known = next((c for c in self._calls.values() if ident and c.id == ident), None)
            if known is not None:
                return known
            key = max(self._calls, default=-1) + 1 if ident or not self._calls else max(
                self._calls)
        if key not in self._calls:
            self._calls[key] = _Call(key)
        return self._calls[key]

    def _tool_fragment(self, fragment: dict[str, Any], events: list[Event]) -> None:
        call = self._call_for(fragment)
        ident = fragment.get("id")
        if not call.id and call.item is None and isinstance(ident, str) and ident:
            call.id = ident  # first id wins: some servers repeat (or vary) it in every fragment
        function = fragment.get("function")
        function = function if isinstance(function, dict) else {}
        name = function.get("name")
        if not call.name and isinstance(name, str) and name:
            call.name = name
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # a few servers send the object itself
            arguments = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
        if not isinstance(arguments, str):
            arguments = ""
        if arguments:
            self._produced.append(arguments)
        if call.item is not None:
            if arguments:
                self._call_arguments(call, arguments, events)
            return
        if arguments:
            call.arguments.append(arguments)
        if call.name and (call.id or call.arguments):
            self._open_call(call, events)

    def _custom(self, call: _Call) -> bool:
        return self.request.tools.target(call.name).custom

    def _open_call(self, call: _Call, events: list[Event]) -> None:
        if self._open is not None:
            self._close_item(self._open, events, "completed")
        item = self._new_item("call", "fc")
        call.item = item
        if not call.id:
            call.id = call_id(self.response_id, item.index)
        added = call_item(item.id, call.id, call.name, "", self.request.tools, "in_progress")
        if "arguments" in added:
            added["arguments"] = ""  # the deltas follow
        events.append(self._event("response.output_item.added", output_index=item.index,
                                  item=added))
        pending, call.arguments = "".join(call.arguments), []
        if pending:
            self._call_arguments(call, pending, events)

    def _call_arguments(self, call: _Call, text: str, events: list[Event]) -> None:
        item = call.item
        assert item is not None
        if item.final is not None:
            return  # after the end of the stream's items: nothing can take it
        item.parts.append(text)
        if not self._custom(call):  # custom input is unwrapped from the whole JSON at the end
            events.append(self._event("response.function_call_arguments.delta",
                                      item_id=item.id, output_index=item.index, delta=text))

    def _close_call(self, item: _Item, events: list[Event]) -> None:
        final = item.final
        assert final is not None
        where = {"item_id": item.id, "output_index": item.index}
        if final["type"] == "custom_tool_call":
            if final["input"]:
                events.append(self._event("response.custom_tool_call_input.delta", **where,
                                          delta=final["input"]))
            events.append(self._event("response.custom_tool_call_input.done", **where,
                                      input=final["input"]))
        else:
            events.append(self._event("response.function_call_arguments.done", **where,
                                      arguments=final["arguments"]))
