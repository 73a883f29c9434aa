"""What the API handlers take and give: plain requests and results, independent of the
framework that carries them (Django and Ninja, or the lean ASGI path in proxy/fastpath.py);
proxy/adapter.py builds the request for both."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, StreamingHttpResponse
from django.utils import translation
from django.utils.translation import gettext

from iflow2api_lib.conf import gateway
from iflow2api_lib.i18n import api_language
from iflow2api_lib.wire import dumps
from proxy.errors import ApiError
from proxy.runtime import Runtime

log = logging.getLogger(__name__)

DATABASE_RETRY_AFTER = 5.0  # seconds: a restarting database is usually back within that


@dataclass
class ApiRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    runtime: Runtime  # the process's (proxy/runtime.py), handed in by the adapter
    client_ip: str = ""
    # The id of the instance whose port it came in on (runtime.listeners.instance_for_port).
    instance_id: int | None = None
    instance: str = "default"  # its name, for the logs: set by admit() once resolved
    # The request's one id (iflow2api_lib/logs.py: the client's x-request-id when sane): in
    # every log line, the request log, the x-request-id and request-id headers, error bodies.
    request_id: str = ""
    query: str = ""  # the query string, undecoded (`limit=20&order=asc`)


@dataclass
class JsonResult:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, data: object, status: int = 200,
           headers: list[tuple[str, str]] | None = None) -> JsonResult:
        return cls(status, dumps(data), headers or [])


SSE_HEADERS = [
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),  # nginx: pass events through at once
]


class FinalChunk(bytes):
    """The last chunk of a stream's `chunks`: nothing but its end follows. A carrier may hold
    it until the stream's cleanup ran and send it with the end of the response (one write)."""

    __slots__ = ()


@dataclass
class StreamResult:
    chunks: AsyncIterator[bytes]
    headers: list[tuple[str, str]] = field(default_factory=list)
    status: int = 200
    # Idempotent; the server calls it when the response ends however it ends, also when the
    # client left before the first chunk (a generator never started runs no `finally`).
    cleanup: Callable[[], Awaitable[None]] | None = None
    # A carrier that can write a chunk at any moment (the lean one) hands its writer here: a
    # chunk the upstream sent while `chunks` waited then goes out without waking its reader
    # (proxy/streaming.py). The stream's first chunk and its ending (the session's close or
    # fail, the one a wrapper of `chunks` may hold) always come through `chunks`.
    write_directly: Callable[[Callable[[bytes], Awaitable[None]]], None] | None = None


def to_django(result: JsonResult | StreamResult) -> HttpResponse:
    if isinstance(result, StreamResult):
        response: HttpResponse = StreamingHttpResponse(
            result.chunks, status=result.status, content_type="text/event-stream; charset=utf-8"
        )
        for name, value in SSE_HEADERS:
            response[name] = value
    else:
        response = HttpResponse(result.body, status=result.status,
                                content_type="application/json")
    for name, value in result.headers:
        response[name] = value
    return response


def body_too_large() -> ApiError:
    limit = gateway()["MAX_BODY_BYTES"]
    size = f"{limit / 2**20:g} MiB" if limit >= 2**20 else f"{limit} B"
    return ApiError(413, gettext("request body too large (the limit is %(size)s)")
                    % {"size": size}, "request_too_large")


async def call_handler(
    handler: Callable[[ApiRequest], Awaitable[JsonResult | StreamResult]],
    request: ApiRequest,
    render_error: Callable[[ApiError], JsonResult],
) -> JsonResult | StreamResult:
    """Runs an API handler; a bug of ours is logged and answered 500 in the client's format,
    never with a traceback. Our error messages are English unless the request asks for
    another language with Accept-Language."""
    language = api_language(request.headers)
    if language is not None:
        # This request's task only (the language lives in a context variable), for as long as
        # it runs: also while a stream is relayed and for in-band stream errors.
        translation.activate(language)
    try:
        return await handler(request)
    except (OperationalError, InterfaceError) as exc:
        # Not a bug of ours: the database is down or out of connections (the pool waited
        # DATABASE_POOL_TIMEOUT). Clients may retry; the log gets one line, no traceback.
        log.warning("database unavailable in %s: %s", request.path, exc)
        return render_error(ApiError(503, gettext(
            "the gateway's database is unavailable; retry the request later"),
            "database_unavailable", retry_after=DATABASE_RETRY_AFTER))
    except Exception:
        log.exception("unhandled error in %s", request.path)
        return render_error(ApiError(500, gettext("internal error in the gateway"),
                                     "internal_error"))
