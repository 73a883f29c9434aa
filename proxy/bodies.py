"""Limits on the work one client body may cause (docs/security.md: "Request limits").

A body within MAX_BODY_BYTES can still hold 600k tiny messages or 100k nested arrays: parsing
and translating it would take seconds and ~20x its size in memory. These bounds keep the work
per request small and proportional to the body; each is checked before the work it bounds and
refused with a 400 that names its setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext

from iflow2api_lib.conf import gateway
from proxy.errors import ApiError

LIMIT_CODE = "request_limit_exceeded"
# orjson refuses nesting beyond 1024 levels by itself; a higher setting could not take effect.
DEPTH_CEILING = 1000


@dataclass(frozen=True)
class BodyLimits:
    nodes: int
    depth: int
    messages: int
    content_blocks: int
    tools: int

    @classmethod
    def configured(cls) -> BodyLimits:
        conf = gateway()
        return cls(
            nodes=conf["MAX_JSON_NODES"],
            depth=min(conf["MAX_JSON_DEPTH"], DEPTH_CEILING),
            messages=conf["MAX_REQUEST_MESSAGES"],
            content_blocks=conf["MAX_REQUEST_CONTENT_BLOCKS"],
            tools=conf["MAX_REQUEST_TOOLS"],
        )


def check_before_parsing(raw: bytes, limits: BodyLimits) -> int:
    """Refuses a body with too many objects, arrays and strings, over-estimated at C speed from
    its `{`, `[` and `"` bytes (those inside strings count too): what parsing it would
    allocate. Returns its `{` and `[` bytes: no value parsed from it nests deeper than that
    (check_parsed need not walk one that cannot be too deep)."""
    brackets = raw.count(b"{") + raw.count(b"[")
    count = brackets + raw.count(b'"') // 2
    if count > limits.nodes:
        raise ApiError(400, gettext(
            "the request body holds about %(count)d JSON objects, arrays and strings; this "
            "gateway accepts at most %(limit)d (MAX_JSON_NODES)")
            % {"count": count, "limit": limits.nodes}, LIMIT_CODE)
    return brackets


def too_deep_error(limit: int) -> ApiError:
    return ApiError(400, gettext(
        "the request body nests objects and arrays more than %(limit)d levels deep "
        "(MAX_JSON_DEPTH)") % {"limit": limit}, LIMIT_CODE)


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` nests dicts and lists more than `limit` deep; iterative, so a deep value
    cannot exhaust the stack here."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _count_error(param: str, count: int, limit: int, setting: str) -> ApiError:
    return ApiError(400, gettext(
        "`%(param)s` has %(count)d entries; this gateway accepts at most %(limit)d (%(setting)s)")
        % {"param": param, "count": count, "limit": limit, "setting": setting},
        LIMIT_CODE, param)


def check_parsed(body: dict[str, Any], limits: BodyLimits, brackets: int | None = None) -> None:
    """The counts first (cheap), then the nesting of everything, unless the body's text has
    no more `{` and `[` (`brackets`, from check_before_parsing) than the depth allowed."""
    messages = body.get("messages")
    if isinstance(messages, list):
        if len(messages) > limits.messages:
            raise _count_error("messages", len(messages), limits.messages,
                               "MAX_REQUEST_MESSAGES")
        blocks = sum(len(m["content"]) for m in messages
                     if isinstance(m, dict) and isinstance(m.get("content"), list))
        if blocks > limits.content_blocks:
            raise ApiError(400, gettext(
                "the messages hold %(count)d content blocks in all; this gateway accepts at most "
                "%(limit)d (MAX_REQUEST_CONTENT_BLOCKS)")
                % {"count": blocks, "limit": limits.content_blocks}, LIMIT_CODE, "messages")
    tools = body.get("tools")
    if isinstance(tools, list) and len(tools) > limits.tools:
        raise _count_error("tools", len(tools), limits.tools, "MAX_REQUEST_TOOLS")
    if (brackets is None or brackets > limits.depth) and nesting_exceeds(body, limits.depth):
        raise too_deep_error(limits.depth)
