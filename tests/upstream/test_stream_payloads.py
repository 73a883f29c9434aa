"""upstream/client.py's reading of SSE data payloads into chunk objects (`_parse_batch`):
the usual one-object payload and each unusual one the upstreams send."""

from __future__ import annotations

import pytest

from upstream.client import _parse_batch
from upstream.providers import iflow, openai
from upstream.types import FinalBatch, UpstreamError

CHUNK = '{"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}'


def test_one_object_per_payload() -> None:
    batch, done = _parse_batch(openai.PROVIDER, [CHUNK, CHUNK])
    assert batch == [{"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"},
                                              "finish_reason": None}]}] * 2
    assert not done and not isinstance(batch, FinalBatch)


def test_done_ends_the_batch_and_nothing_after_it_is_read() -> None:
    batch, done = _parse_batch(openai.PROVIDER, [CHUNK, "[DONE]", CHUNK])
    assert done and isinstance(batch, FinalBatch) and len(batch) == 1


@pytest.mark.parametrize("payload", [f"  {CHUNK}  ", f"\t{CHUNK}\n"])
def test_whitespace_around_the_object(payload: str) -> None:
    assert _parse_batch(openai.PROVIDER, [payload])[0] == _parse_batch(openai.PROVIDER,
                                                                       [CHUNK])[0]


def test_objects_on_lines_of_one_payload_without_blank_lines_between() -> None:
    batch, done = _parse_batch(openai.PROVIDER, [f"{CHUNK}\n{CHUNK}\n[DONE]"])
    assert len(batch) == 2 and done


def test_values_that_are_not_chunks_are_skipped() -> None:
    batch, done = _parse_batch(openai.PROVIDER, ["", "[1, 2]", '"text"', "not json", CHUNK])
    assert len(batch) == 1 and not done


def test_an_in_band_error_raises() -> None:
    with pytest.raises(UpstreamError) as caught:
        _parse_batch(openai.PROVIDER, [CHUNK, '{"error": {"message": "Rate limit", '
                                             '"type": "rate_limit_error"}}'])
    assert caught.value.status == 429


def test_an_in_band_error_on_a_line_of_its_payload_raises() -> None:
    with pytest.raises(UpstreamError):
        _parse_batch(openai.PROVIDER, [f'{CHUNK}\n{{"error": "overloaded"}}'])


def test_each_provider_judges_its_own_errors() -> None:
    envelope = '{"status": "449", "msg": "rate limited"}'
    assert _parse_batch(openai.PROVIDER, [envelope])[0] == [{"status": "449",
                                                             "msg": "rate limited"}]
    with pytest.raises(UpstreamError):
        _parse_batch(iflow.PROVIDER, [envelope])
