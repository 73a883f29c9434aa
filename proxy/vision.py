"""Images on both APIs: route them to a model that can see, inline URL images for upstreams that
take only data URLs, and refuse bad images with a 400 instead of letting the upstream fail."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from proxy.errors import ApiError
from proxy.pipeline import Route, resolve, upstream_client
from proxy.translate.types import TranslationError
from proxy.translate.vision import (
    check_image,
    decode_data_url,
    image_parts,
    image_url_of,
    set_image_url,
    to_data_url,
)
from proxy.upstream.types import UpstreamError


async def prepare_images(route: Route, body: dict[str, Any]) -> Route:
    """Checks and rewrites the image parts of `body` (an OpenAI chat body we own) in place;
    returns the route to use, which differs when the images need a vision model."""
    parts = list(image_parts(body))
    if not parts:
        return route
    conf = settings.IFLOW2API
    if not route.model.vision:
        if conf["VISION_FALLBACK"] == "reject":
            raise ApiError(400, f"the model `{route.model.id}` does not accept images; send them "
                           "to a vision model", "model_not_vision", "model")
        vision_route = await resolve(conf["VISION_MODEL"])
        body["model"] = vision_route.model.upstream_id
        limit = vision_route.model.max_output_tokens
        for key in ("max_tokens", "max_completion_tokens"):
            if limit and isinstance(body.get(key), int) and body[key] > limit:
                body[key] = limit
        route = vision_route
    max_bytes = conf["IMAGE_MAX_BYTES"]
    try:
        for param, part in parts:
            url = image_url_of(part, param)
            if url.startswith("data:"):
                media_type, data = decode_data_url(url, param, max_bytes)
                if not url.startswith(f"data:{media_type};"):  # mislabelled: send the truth
                    set_image_url(part, to_data_url(media_type, data))
            elif route.inlines_images:
                content_type, data = await upstream_client().fetch_image(
                    url, max_bytes=max_bytes, timeout=conf["IMAGE_FETCH_TIMEOUT"],
                    allow_private=conf["IMAGE_ALLOW_PRIVATE_URLS"])
                set_image_url(part, to_data_url(check_image(data, content_type, param,
                                                            max_bytes), data))
    except TranslationError as exc:
        raise ApiError(400, exc.message, "invalid_image", exc.param) from exc
    except UpstreamError as exc:
        raise ApiError(exc.status, exc.message, exc.code) from exc
    return route
