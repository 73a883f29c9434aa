"""Images in OpenAI chat bodies: finding them and checking data URLs. Pure: fetching image URLs
(and the SSRF guard) is the upstream client's (upstream/images.py)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Any

from proxy.translate.types import TranslationError, gettext_noop

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


def image_parts(body: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(param path, part) for every `image_url` part; the part dict may be edited in place."""
    for i, message in enumerate(body.get("messages") or []):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "image_url":
                yield f"messages[{i}].content[{j}]", part


def image_url_of(part: dict[str, Any], param: str) -> str:
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise TranslationError.at(param, gettext_noop("image_url.url must be a non-empty string"))
    return url


def set_image_url(part: dict[str, Any], url: str) -> None:
    value = part.get("image_url")
    part["image_url"] = {**value, "url": url} if isinstance(value, dict) else {"url": url}


def sniff_image_type(data: bytes) -> str | None:
    """The real format from the first bytes: a declared type is not trusted alone."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_image(data: bytes, declared: str | None, param: str, max_bytes: int) -> str:
    """The media type of valid image bytes; TranslationError (→ 400) otherwise."""
    if not data:
        raise TranslationError.at(param, gettext_noop("the image is empty"))
    if len(data) > max_bytes:
        raise TranslationError.at(
            param, gettext_noop("the image is %(size)d bytes; the limit is %(limit)d"),
            size=len(data), limit=max_bytes)
    actual = sniff_image_type(data)
    if actual is None:
        raise TranslationError.at(
            param, gettext_noop("unsupported image type %(type)s; send PNG, JPEG, GIF or WebP"),
            type=declared or "unknown")
    return actual


def decode_data_url(url: str, param: str, max_bytes: int) -> tuple[str, bytes]:
    """(media type, bytes) of a base64 `data:` URL, checked."""
    header, comma, payload = url.partition(",")
    if not comma or not header.startswith("data:") or not header.endswith(";base64"):
        raise TranslationError.at(
            param, gettext_noop("image data URLs must be data:<type>;base64,<data>"))
    declared = header[5:-7].lower()
    if declared not in IMAGE_TYPES:
        raise TranslationError.at(
            param, gettext_noop("unsupported image type %(type)s; send PNG, JPEG, GIF or WebP"),
            type=declared or "unknown")
    if len(payload) > max_bytes * 4 // 3 + 8:
        raise TranslationError.at(
            param, gettext_noop("the image is larger than %(limit)d bytes"), limit=max_bytes)
    try:
        data = base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TranslationError.at(
            param, gettext_noop("the image is not valid base64")) from exc
    return check_image(data, declared, param, max_bytes), data


def to_data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"

