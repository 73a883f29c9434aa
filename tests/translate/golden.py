"""Golden files: compare with a reviewed JSON file; `UPDATE_GOLDEN=1 pytest` rewrites them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "anthropic"


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _plain(value: Any) -> Any:
    """Tuples -> lists, so in-memory events compare equal to their JSON form."""
    return json.loads(json.dumps(value, ensure_ascii=False))


def assert_golden(path: Path, actual: Any) -> None:
    actual = _plain(actual)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        text = json.dumps(actual, ensure_ascii=False, indent=2) + "\n"
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"missing golden {path.name}: run with UPDATE_GOLDEN=1 and review it"
    expected = load(path)
    if actual == expected:
        return
    detail = ""
    if isinstance(actual, list) and isinstance(expected, list):
        for i, (got, want) in enumerate(zip(actual, expected, strict=False)):
            if got != want:
                detail = f"first difference at item {i}:\n  got  {got}\n  want {want}"
                break
        else:
            detail = f"length {len(actual)} != expected {len(expected)}"
    raise AssertionError(f"{path.name} differs (UPDATE_GOLDEN=1 rewrites it): {detail}")
