"""One error family for the API, rendered in the calling client's own format."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from django.utils.translation import gettext, gettext_noop

from iflow2api_lib.logs import new_request_id
from iflow2api_lib.logs import request_id as current_request_id
from iflow2api_lib.redact import redact

# `echo`: the one helper that cuts a client's value short before an error message quotes it
# (pure, so the translators use it too).
from proxy.translate.types import echo as echo
from upstream.errors import prompt_too_long_message
from upstream.types import UpstreamError

OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
}
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


DEFAULT_RETRY_AFTER = 5.0
# The upstream client's fixed messages (upstream knows no Django): translated here, at
# the edge. Anything else an upstream says is passed on as it is.
UPSTREAM_MESSAGES = frozenset({
    gettext_noop("upstream timed out"),
    gettext_noop("upstream connection lost mid-stream"),
    gettext_noop("upstream returned an empty stream"),
    gettext_noop("upstream sent invalid JSON"),
    gettext_noop("upstream sent an unexpected answer"),
})


def hide_secrets(err: UpstreamError | ApiError, secrets: Iterable[str]) -> None:
    """An upstream may quote the key it was called with in its error text: never pass an
    account's secrets on to our client (before the stream, or in-band)."""
    err.message = redact(err.message, secrets)


@dataclass
class ApiError(Exception):
    status: int
    message: str
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None
    # False: sent as `x-should-retry: false`, which the official SDKs obey (a client cannot
    # fix the cause by retrying).
    should_retry: bool | None = None
    # A context overflow's figures (upstream's, else the handler's fallbacks): the Anthropic
    # shape words it "prompt is too long: N tokens > M maximum".
    prompt_tokens: int | None = None
    context_limit: int | None = None

    @classmethod
    def from_upstream(cls, err: UpstreamError) -> ApiError:
        message = gettext(err.message) if err.message in UPSTREAM_MESSAGES else err.message
        return cls(err.status, message, err.code, None, err.retry_after,
                   prompt_tokens=err.prompt_tokens, context_limit=err.context_limit)

    def with_context_fallbacks(self, estimate: int, context_length: int | None) -> ApiError:
        """A context overflow without the upstream's figures gets sensible ones: the prompt's
        (calibrated) estimate and the catalogue's context length, kept consistent (the prompt
        is over the maximum: that is what the error says)."""
        if self.code != "context_length_exceeded":
            return self
        tokens, limit = self.prompt_tokens, self.context_limit
        if limit is None and context_length and (tokens is None or context_length < tokens):
            limit = context_length  # the catalogue's, unless the upstream's count contradicts it
        if tokens is None:
            tokens = max(estimate, (limit or 0) + 1, 2)
        if limit is None:
            limit = tokens - 1
        self.prompt_tokens, self.context_limit = tokens, limit
        return self

    def anthropic_message(self) -> str:
        """Claude Code compacts on "prompt is too long: N tokens > M maximum"; every other
        error keeps its message."""
        if self.code == "context_length_exceeded" and self.prompt_tokens and self.context_limit:
            return prompt_too_long_message(self.prompt_tokens, self.context_limit)
        return self.message

    def headers(self) -> list[tuple[str, str]]:
        headers = [] if self.should_retry is None else [
            ("x-should-retry", "true" if self.should_retry else "false")]
        retry_after = self.retry_after
        if retry_after is None and self.status == 429:
            retry_after = DEFAULT_RETRY_AFTER  # SDKs honour it; without one they guess
        if retry_after is not None:
            headers.append(("retry-after", str(max(1, math.ceil(retry_after)))))
        return headers

    def openai_body(self) -> dict:
        kind = OPENAI_TYPES.get(self.status, "api_error" if self.status >= 500 else
                                "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param,
                          "code": self.code}}

    def anthropic_type(self) -> str:
        return ANTHROPIC_TYPES.get(self.status, "api_error" if self.status >= 500 else
                                   "invalid_request_error")

    def anthropic_body(self, request_id: str | None = None) -> dict:
        """Anthropic's error shape, with the request's one id (the x-request-id the server
        gave it, which its log lines and request-log row carry)."""
        return {
            "type": "error",
            "error": {"type": self.anthropic_type(), "message": self.anthropic_message()},
            "request_id": request_id or this_request_id(),
        }


def this_request_id() -> str:
    """The id of the request being served (iflow2api_lib/logs.py sets it for every HTTP
    request); a new one outside any request."""
    current = current_request_id.get()
    return current if current != "-" else new_request_id()


