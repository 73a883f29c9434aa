"""The Responses streaming grammar (docs/responses-api.md) as an executable checker.

`check_responses_stream(events)` raises AssertionError naming the first offending event.
Events are the data dicts as produced by ResponsesStream (the SSE event name is data.type).
"""

from __future__ import annotations

from typing import Any, NoReturn

_TERMINAL = {"response.completed", "response.incomplete", "response.failed"}
_ITEM_EVENTS = {
    "message": ("response.content_part.added", "response.output_text.delta",
                "response.output_text.done", "response.content_part.done"),
    "reasoning": ("response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
                  "response.reasoning_summary_text.done", "response.reasoning_summary_part.done"),
    "function_call": ("response.function_call_arguments.delta",
                      "response.function_call_arguments.done"),
    "custom_tool_call": ("response.custom_tool_call_input.delta",
                         "response.custom_tool_call_input.done"),
    "compaction": (),  # whole in output_item.added (responses_compaction.py)
}


class _Checker:
    def __init__(self) -> None:
        self.position = 0
        self.sequence = -1
        self.items: dict[int, dict[str, Any]] = {}  # output_index -> state
        self.terminal: str | None = None
        self.response_id: str | None = None
        self.names: list[str] = []

    def fail(self, problem: str) -> NoReturn:
        name = self.names[-1] if self.names else "?"
        raise AssertionError(f"event #{self.position} ({name}): {problem}")

    def check(self, event: Any) -> None:
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self.fail(f"expected a dict with a type, got {event!r:.200}")
        kind = event["type"]
        self.names.append(kind)
        sequence = event.get("sequence_number")
        if not isinstance(sequence, int) or sequence <= self.sequence:
            self.fail(f"sequence_number must increase, got {sequence!r} after {self.sequence}")
        self.sequence = sequence
        if self.terminal == "response.failed" and kind == "error":
            self.terminal = "error"
            return
        if self.terminal is not None:
            self.fail(f"event after {self.terminal}")
        expected_start = ["response.created", "response.in_progress"]
        if self.position < 2 and kind != expected_start[self.position]:
            self.fail(f"the stream must begin with {expected_start}")
        if kind in ("response.created", "response.in_progress"):
            self._lifecycle(event, "in_progress")
        elif kind in _TERMINAL:
            self._terminal(event)
        elif kind == "response.output_item.added":
            self._added(event)
        elif kind == "response.output_item.done":
            self._done(event)
        else:
            self._content(event)

    def _lifecycle(self, event: dict[str, Any], status: str) -> None:
        response = event.get("response")
        if not isinstance(response, dict) or response.get("object") != "response":
            self.fail("needs a response object")
        if response.get("status") != status:
            self.fail(f"response.status must be {status!r}, got {response.get('status')!r}")
        if self.response_id is None:
            self.response_id = response.get("id")
        elif response.get("id") != self.response_id:
            self.fail("the response id changed")

    def _terminal(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        status = kind.removeprefix("response.")
        self._lifecycle(event, status)
        response = event["response"]
        if kind != "response.failed":
            open_items = [i for i, s in self.items.items() if not s["done"]]
            if open_items:
                self.fail(f"items {open_items} are still open")
            output = response.get("output")
            finals = [self.items[i]["final"] for i in sorted(self.items)]
            if output != finals:
                self.fail("response.output differs from the output_item.done items")
            if not isinstance(response.get("usage"), dict):
                self.fail("usage is required in the final response")
        elif not isinstance(response.get("error"), dict):
            self.fail("response.failed needs response.error")
        self.terminal = kind

    def _added(self, event: dict[str, Any]) -> None:
        index = event.get("output_index")
        if index != len(self.items):
            self.fail(f"output_index must be {len(self.items)}, got {index!r}")
        item = event.get("item")
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in _ITEM_EVENTS:
            self.fail(f"unknown item {item!r:.200}")
        if not isinstance(item.get("id"), str) or not item["id"]:
            self.fail("item.id must be a non-empty string")
        if kind in ("function_call", "custom_tool_call"):
            for key in ("call_id", "name"):
                if not isinstance(item.get(key), str) or not item[key]:
                    self.fail(f"{kind}.{key} must be a non-empty string")
        self.items[index] = {"item": item, "kind": kind, "done": False, "final": None,
                             "stage": "closed" if kind == "compaction" else "open", "text": []}

    def _item_for(self, event: dict[str, Any]) -> dict[str, Any]:
        state = self.items.get(event.get("output_index"))
        if state is None or state["done"]:
            self.fail(f"output_index {event.get('output_index')!r} is not an open item")
        if event["type"] != "response.output_item.done" and event.get("item_id") != state[
                "item"]["id"]:
            self.fail("item_id does not match the item at output_index")
        return state

    def _content(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        state = self._item_for(event)
        allowed = _ITEM_EVENTS[state["kind"]]
        if kind not in allowed:
            self.fail(f"{kind} inside a {state['kind']} item")
        step = allowed.index(kind)
        if state["kind"] in ("message", "reasoning"):
            order = {0: "open", 1: "part", 2: "part", 3: "text_done"}
            if state["stage"] != order[step]:
                self.fail(f"{kind} out of order (stage {state['stage']})")
            state["stage"] = {0: "part", 1: "part", 2: "text_done", 3: "closed"}[step]
            index_key = "content_index" if state["kind"] == "message" else "summary_index"
            if event.get(index_key) != 0:
                self.fail(f"{index_key} must be 0")
        elif state["stage"] != "open":
            self.fail(f"{kind} after the item's .done event")
        elif step == 1:
            state["stage"] = "closed"
        if kind.endswith(".delta"):
            if not isinstance(event.get("delta"), str) or not event["delta"]:
                self.fail("delta must be a non-empty string")
            state["text"].append(event["delta"])
        if kind.endswith("text.done") and event.get("text") != "".join(state["text"]):
            self.fail("text.done must repeat the concatenated deltas")
        if kind == "response.function_call_arguments.done":
            streamed = "".join(state["text"])
            if event.get("arguments") != (streamed or "{}"):
                self.fail("arguments.done must repeat the concatenated deltas")
        if kind == "response.custom_tool_call_input.done" and event.get("input") != "".join(
                state["text"]):
            self.fail("input.done must repeat the concatenated deltas")

    def _done(self, event: dict[str, Any]) -> None:
        state = self._item_for(event)
        if state["stage"] != "closed":
            self.fail(f"output_item.done before the item's last content event ({state['stage']})")
        item = event.get("item")
        if not isinstance(item, dict) or item.get("id") != state["item"]["id"]:
            self.fail("output_item.done must carry the same item id")
        if item.get("type") != state["kind"]:
            self.fail("output_item.done changed the item type")
        state["done"] = True
        state["final"] = item

    def finish(self) -> None:
        if self.terminal is None:
            raise AssertionError("the stream must end with response.completed/incomplete/failed")
        if self.terminal == "response.failed":
            raise AssertionError("response.failed must be followed by an error event")


def check_responses_stream(events: list[dict[str, Any]]) -> None:
    checker = _Checker()
    for position, event in enumerate(events):
        checker.position = position
        checker.check(event)
    checker.finish()
