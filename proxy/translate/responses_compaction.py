"""Codex's remote compaction (v2) on a chat upstream (docs/clients.md, "Compaction").

Codex compacts a long conversation in one of two ways. With a custom provider it summarises
locally: an ordinary streamed turn, nothing special for the gateway. With a provider it takes
for OpenAI's or Azure's it asks the server instead: an ordinary `POST /v1/responses` whose input
ends with `{"type": "compaction_trigger"}`, and it accepts nothing but exactly one output item
`{"type": "compaction", "encrypted_content": ...}` (anything else fails its turn). Later requests
replay that item in `input`, in place of the history it replaced.

On a chat upstream the summary is written by the model itself: the trigger becomes a request for
a hand-over summary (without tools), the model's answer becomes the compaction item, its text
carried in `encrypted_content` (tagged like our reasoning, responses_items.encode_carried), and a
replayed item of ours becomes a user message holding the summary. Another server's compaction
item cannot be read here and is left to the input translator (which drops it).

Pure: `prepare_compaction` rewrites a request body; `CompactionStream` wraps a ResponsesStream
(same interface), `compaction_response` a whole response.
"""

from __future__ import annotations

from typing import Any

from proxy.translate.responses_items import decode_carried, encode_carried, item_id
from proxy.translate.responses_stream import KEEPALIVE, Event, ResponsesStream
from proxy.translate.types import UpstreamResponseError

COMPACTION_TAG = "iflow2api.compaction.1"
TRIGGER = "compaction_trigger"
NO_SUMMARY = "the model wrote no summary for the compaction"
SUMMARY_REQUEST = (
    "The conversation so far is about to be replaced by a summary, because it no longer fits "
    "the context window. Write that summary now, for whoever continues the work (it may be "
    "another model that sees nothing else): the user's goal and constraints, what has been "
    "done and decided (files, commands, results, errors), the current state, and the next "
    "steps. Keep names, paths, values and short code that will be needed verbatim. Answer "
    "with the summary only, in plain text; do not call tools."
)
SUMMARY_HEADING = ("[Summary of the earlier conversation, written when it was compacted to fit "
                   "the context window]")
# Request fields that make no sense for a summary: it is text, written without tools.
_NOT_FOR_SUMMARY = ("tools", "tool_choice", "parallel_tool_calls", "text")


def encode_summary(text: str) -> str:
    return encode_carried(COMPACTION_TAG, text)


def decode_summary(value: Any) -> str | None:
    return decode_carried(COMPACTION_TAG, value)


def _user_text(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def _kind(item: Any) -> Any:
    return item.get("type") if isinstance(item, dict) else None


def prepare_compaction(body: dict[str, Any]) -> bool:
    """Rewrites `body["input"]` in place for a chat upstream; True for a compaction request.

    Our compaction items become the summary as a user message. A trigger counts only as the
    last item (a stored conversation replayed with previous_response_id may hold older ones,
    which are dropped); it becomes the summary request, and tools go for this request.
    """
    items = body.get("input")
    if not isinstance(items, list):
        return False
    compacting = bool(items) and _kind(items[-1]) == TRIGGER
    rewritten: list[Any] = []
    for item in items:
        kind = _kind(item)
        if kind == TRIGGER:
            continue
        summary = decode_summary(item.get("encrypted_content")) if kind == "compaction" else None
        rewritten.append(_user_text(f"{SUMMARY_HEADING}\n\n{summary}")
                         if summary is not None else item)
    if compacting:
        rewritten.append(_user_text(SUMMARY_REQUEST))
        for key in _NOT_FOR_SUMMARY:
            body.pop(key, None)
    body["input"] = rewritten
    return compacting


def _summary_text(response: dict[str, Any]) -> str:
    """The text of the response's message items (reasoning and calls are not the summary)."""
    texts = [
        part.get("text", "")
        for item in response.get("output") or []
        if isinstance(item, dict) and item.get("type") == "message"
        for part in item.get("content") or []
        if isinstance(part, dict) and part.get("type") == "output_text"
    ]
    return "".join(t for t in texts if isinstance(t, str)).strip()


def compaction_item(response_id: str, summary: str) -> dict[str, Any]:
    return {"id": item_id("cmp", response_id, 0), "type": "compaction",
            "encrypted_content": encode_summary(summary)}


def compaction_response(response: dict[str, Any]) -> dict[str, Any]:
    """A finished (completed or incomplete) response -> the compaction answer. A summary cut
    by the output limit is still a summary: the answer is `completed`. UpstreamResponseError
    (the caller's 502) when the model wrote no text."""
    summary = _summary_text(response)
    if not summary:
        raise UpstreamResponseError(NO_SUMMARY)
    return {**response, "status": "completed", "incomplete_details": None,
            "output": [compaction_item(response["id"], summary)]}


class CompactionStream:
    """A ResponsesStream whose output is one compaction item: `response.created` and
    `response.in_progress` pass, the model's items are kept back, and at the end come
    `output_item.added`/`.done` for the compaction item and `response.completed` (or
    `response.failed` + `error`, as the inner stream reports it or when no summary came)."""

    keepalive = KEEPALIVE

    def __init__(self, inner: ResponsesStream) -> None:
        self.inner = inner
        self.status: str | None = None
        self.response: dict[str, Any] | None = None
        self._sequence = 0

    @property
    def finished(self) -> bool:
        return self.inner.finished

    def start(self) -> list[Event]:
        return self._pass(self.inner.start())

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        return self._pass(self.inner.feed(chunk))

    def feed_texts(self, texts: list[str]) -> list[Event]:
        return self._pass(self.inner.feed_texts(texts))

    def close(self) -> list[Event]:
        return self._pass(self.inner.close())

    def fail(self, message: str, code: str = "server_error") -> list[Event]:
        return self._pass(self.inner.fail(message, code))

    def _event(self, event: Event) -> Event:
        event = {**event, "sequence_number": self._sequence}
        self._sequence += 1
        return event

    def _pass(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        for event in events:
            kind = event["type"]
            if kind in ("response.created", "response.in_progress"):
                out.append(self._event(event))
            elif kind in ("response.completed", "response.incomplete"):
                out.extend(self._finish(event["response"]))
            elif kind in ("response.failed", "error"):
                if kind == "response.failed":
                    self.status, self.response = "failed", event["response"]
                out.append(self._event(event))
        return out

    def _finish(self, final: dict[str, Any]) -> list[Event]:
        try:
            response = compaction_response(final)
        except UpstreamResponseError:
            return self._pass(self._no_summary(final))
        item = response["output"][0]
        self.status, self.response = "completed", response
        return [self._event({"type": "response.output_item.added", "output_index": 0,
                             "item": item}),
                self._event({"type": "response.output_item.done", "output_index": 0,
                             "item": item}),
                self._event({"type": "response.completed", "response": response})]

    @staticmethod
    def _no_summary(final: dict[str, Any]) -> list[Event]:
        """response.failed + error for a finished response without a summary."""
        response = {**final, "status": "failed", "output": [],
                    "error": {"code": "server_error", "message": NO_SUMMARY}}
        error = {"type": "api_error", "code": "server_error", "message": NO_SUMMARY,
                 "param": None}
        return [{"type": "response.failed", "response": response},
                {"type": "error", "code": "server_error", "message": NO_SUMMARY, "param": None,
                 "error": error}]
