"""Images on both APIs: route them to a model that can see, inline URL images for upstreams that
take only data URLs, and refuse bad images with a 400 instead of letting the upstream fail."""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.utils.translation import gettext

from accounts.services import AccountRef, ModelRef
from proxy.errors import ApiError
from proxy.pipeline import GatewayOptions, clamp_output_tokens, resolve_model
from proxy.translate.types import TranslationError
from proxy.translate.vision import (
    check_image,
    decode_data_url,
    image_parts,
    image_url_of,
    set_image_url,
    to_data_url,
)
from upstream.client import UpstreamClient
from upstream.types import UpstreamError

# Providers that take images only as data URLs: URL images are fetched and inlined for them.
DATA_URL_ONLY_PROVIDERS = frozenset({"iflow"})


async def model_for_images(model: ModelRef, body: dict[str, Any],
                           opts: GatewayOptions) -> ModelRef:
    """Checks the data-URL images of `body` (an OpenAI chat body we own; mislabelled ones are
    relabelled in place) and returns the model to use: the vision model when `model` cannot
    see and the body has images."""
    parts = list(image_parts(body))
    if not parts:
        return model
    conf = settings.IFLOW2API
    try:
        for param, part in parts:
            url = image_url_of(part, param)
            if url.startswith("data:"):
                media_type, data = decode_data_url(url, param, conf["IMAGE_MAX_BYTES"])
                if not url.startswith(f"data:{media_type};"):  # mislabelled: send the truth
                    set_image_url(part, to_data_url(media_type, data))
    except TranslationError as exc:
        raise ApiError(400, exc.localized(gettext), "invalid_image", exc.param) from exc
    if model.vision:
        return model
    if conf["VISION_FALLBACK"] == "reject":
        raise ApiError(400, gettext("the model `%(model)s` does not accept images; send them to "
                                    "a vision model") % {"model": model.id},
                       "model_not_vision", "model")
    # The instance's routing choice, not the client's: the key's model list does not apply.
    vision = await resolve_model(opts.instance.vision_model, opts, check_key=False)
    body["model"] = vision.upstream_id
    clamp_output_tokens(body, vision)
    return vision


async def inline_remote_images(accounts: list[AccountRef], body: dict[str, Any],
                               client: UpstreamClient) -> None:
    """iFlow takes only data URLs: when one of the `accounts` that may serve the request
    (relay's, already limited to the instance's) is iFlow, fetch the
    URL images (SSRF-guarded, in parallel, at most IMAGE_MAX_URLS) and inline them. Runs once
    per request before an account slot is taken: a slow image host must not hold a slot."""
    remote = [(param, part, url) for param, part in image_parts(body)
              if not (url := _image_url(part, param)).startswith("data:")]
    if not remote or not any(a.provider in DATA_URL_ONLY_PROVIDERS for a in accounts):
        return
    conf = settings.IFLOW2API
    if len(remote) > conf["IMAGE_MAX_URLS"]:
        raise ApiError(400, gettext("the request has %(count)d image URLs; at most %(limit)d "
                                    "are fetched per request (send the others as base64)")
                       % {"count": len(remote), "limit": conf["IMAGE_MAX_URLS"]},
                       "too_many_images", "messages")
    fetches = [asyncio.ensure_future(_fetch_data_url(client, url, param))
               for param, _, url in remote]
    try:
        data_urls = await asyncio.gather(*fetches)
    finally:
        for fetch in fetches:  # the first failure answers: stop the other downloads
            fetch.cancel()
    for (_, part, _), data_url in zip(remote, data_urls, strict=True):
        set_image_url(part, data_url)


def _image_url(part: dict[str, Any], param: str) -> str:
    try:
        return image_url_of(part, param)
    except TranslationError as exc:
        raise ApiError(400, exc.localized(gettext), "invalid_image", exc.param) from exc


async def _fetch_data_url(client: UpstreamClient, url: str, param: str) -> str:
    conf = settings.IFLOW2API
    max_bytes = conf["IMAGE_MAX_BYTES"]
    try:
        content_type, data = await client.fetch_image(
            url, max_bytes=max_bytes, timeout=conf["IMAGE_FETCH_TIMEOUT"],
            allow_private=conf["IMAGE_ALLOW_PRIVATE_URLS"])
        return to_data_url(check_image(data, content_type, param, max_bytes), data)
    except TranslationError as exc:
        raise ApiError(400, exc.localized(gettext), "invalid_image", exc.param) from exc
    except UpstreamError as exc:
        raise ApiError(exc.status, exc.message, exc.code) from exc
