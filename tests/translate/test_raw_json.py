"""proxy/translate/raw_json.py: top-level values rewritten in the client's own bytes."""

from __future__ import annotations

import json
import random

from proxy.translate.raw_json import replace_top_level, top_level_spans


def test_only_the_named_values_change():
    raw = (b'{ "model" : "claude-x",\n "messages":[{"role":"user","content":"model \\" ]}"}],'
           b'"max_tokens":32000, "temperature":0.70,"nested":{"model":"keep"}}')
    out = replace_top_level(raw, {"model": "glm-4.6", "max_tokens": 512})
    assert out == raw.replace(b'"claude-x"', b'"glm-4.6"').replace(b"32000", b"512")
    assert json.loads(out)["nested"] == {"model": "keep"}


def test_every_duplicate_is_rewritten_and_absent_keys_are_not_added():
    raw = b'{"model":"a","x":1,"model":"b"}'
    assert replace_top_level(raw, {"model": "z", "stream": True}) == \
        b'{"model":"z","x":1,"model":"z"}'
    assert replace_top_level(b'{"x":[]}', {"model": "z"}) == b'{"x":[]}'


def test_unicode_and_escapes_survive_and_random_objects_agree_with_json():
    rng = random.Random(7)
    values = ["ä✓", 'q"uote', "back\\slash", 1.50, -3, True, None, [1, {"a": "]"}], {"b": "}"}]
    for _ in range(200):
        keys = rng.sample(["model", "a", "b", "c", "messages"], rng.randint(1, 5))
        doc = {k: rng.choice(values) for k in keys}
        raw = json.dumps(doc, ensure_ascii=rng.random() < 0.5,
                         separators=rng.choice([(",", ":"), (", ", ": ")])).encode()
        assert [k for k, _, _ in top_level_spans(raw.decode())] == keys
        out = replace_top_level(raw, {"model": "up/1"})
        assert json.loads(out) == ({**doc, "model": "up/1"} if "model" in doc else doc)
