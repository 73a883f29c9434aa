"""Text runs (upstream/text_lane.py) for the translators that read chat chunks into another
protocol (Anthropic Messages, Responses API).

A run stands for chunks that are one template around different texts. When the template is a
text-only chunk — what read_chunk() reads as nothing but its first choice's text — feeding
each of its chunks to a translator comes to adding that text, which the translator's
`feed_texts` does without building and reading the chunks. Any other template's runs are fed
as the chunks they stand for.
"""

from __future__ import annotations

from typing import Any, Protocol

from proxy.translate.anthropic_response import reasoning_text
from proxy.translate.upstream_chat import read_chunk

# Top-level keys some translators read besides the choice (llama.cpp's stop word).
_READ_AT_TOP = ("stopping_word", "__verbose")


def is_text_only(chunk: dict[str, Any]) -> bool:
    """Whether read_chunk() finds nothing in `chunk` but its first choice's non-empty text."""
    reading = read_chunk(chunk)
    if reading.error is not None or reading.usage is not None or len(reading.steps) != 1:
        return False
    step = reading.steps[0]
    delta = step.delta
    return (step.finish_reason is None and delta is not None
            and isinstance(delta.get("content"), str) and bool(delta["content"])
            and not reasoning_text(delta) and not isinstance(delta.get("tool_calls"), list)
            and not any(key in chunk for key in _READ_AT_TOP))


class Translator(Protocol):
    def feed(self, chunk: dict[str, Any]) -> list[Any]: ...
    def feed_texts(self, texts: list[str]) -> list[Any]: ...


class TextRuns:
    """One stream's runs through its translator; remembers the last template found
    text-only (a stream rarely has more than one or two)."""

    __slots__ = ("_text_only", "translator")

    def __init__(self, translator: Translator) -> None:
        self.translator = translator
        self._text_only: object = None  # the last template found text-only

    def events(self, run: Any) -> list[Any]:
        """What the translator gives for the run's chunks, one by one."""
        if run.template is not self._text_only:
            if not is_text_only(run.template.sample):
                return [event for chunk in run.chunks() for event in self.translator.feed(chunk)]
            self._text_only = run.template
        return self.translator.feed_texts(run.texts())
