"""The iFlow login protocol: OAuth (iflow.cn) and the cookie login (platform.iflow.cn).

The only module of `accounts` that speaks HTTP. Plain data in and out, no models: the Django
side (accounts/logins.py, the refresher) stores what these calls return. The transport is
injectable (`httpx.BaseTransport`), so tests can swap it; the clock too (`now`).

Errors are `OAuthError` with a `kind`:

- ``invalid_grant``    the code or refresh token is dead: the user must log in again
- ``overloaded``       iFlow's HTTP-200 ``{"success": false, "code": "500", "message": "…太多…"}``
                       or a 429: retry with backoff
- ``unauthorized``     the cookie (401) or the client credentials were refused
- ``invalid_response`` an answer we cannot use, e.g. HTTP 200 without ``access_token``
- ``transient``        network errors, timeouts, 5xx: retry with backoff

Messages never contain a token, code, key or cookie: they are safe to log and to show.

Times: ``expires_in`` becomes an aware UTC ``expires_at`` from the injected clock. The platform's
``expireTime`` (``"YYYY-MM-DD HH:MM"``, no zone) is China time, **UTC+8**; it is converted to UTC.
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal
from urllib.parse import quote, urlencode

import httpx

from iflow2api_lib.redact import redact

__all__ = [
    "CHINA_TZ",
    "CookieKey",
    "OAuthClient",
    "OAuthConfig",
    "OAuthError",
    "TokenSet",
    "UserInfo",
    "normalize_bxauth",
    "parse_expire_time",
]

CHINA_TZ = timezone(timedelta(hours=8), "UTC+8")
# When a token answer has no usable expires_in: assume a short life, so it is refreshed soon.
DEFAULT_TOKEN_LIFETIME = timedelta(hours=1)

BROWSER_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)

ErrorKind = Literal["invalid_grant", "overloaded", "unauthorized", "invalid_response", "transient"]
RETRYABLE_KINDS = frozenset({"overloaded", "transient"})
_OVERLOADED_WORDS = ("太多", "频繁", "繁忙", "too many", "busy", "overload")


class OAuthError(Exception):
    """A failed login call. `kind` says what to do about it; `retryable` whether to retry."""

    def __init__(self, kind: ErrorKind, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    def __repr__(self) -> str:
        return f"OAuthError({self.kind!r}, {self.message!r})"


@dataclass(frozen=True)
class OAuthConfig:
    client_id: str
    client_secret: str = field(repr=False)
    oauth_base_url: str = "https://iflow.cn"
    platform_base_url: str = "https://platform.iflow.cn"
    timeout: float = 15.0
    proxy: str | None = None  # like the chat client: environment proxies are ignored

    @classmethod
    def from_settings(cls) -> OAuthConfig:
        """From settings.IFLOW2API, read at call time (tests override it)."""
        from django.conf import settings

        conf = settings.IFLOW2API
        return cls(
            client_id=conf["IFLOW_OAUTH_CLIENT_ID"],
            client_secret=conf["IFLOW_OAUTH_CLIENT_SECRET"],
            oauth_base_url=(conf.get("IFLOW_OAUTH_BASE_URL") or "https://iflow.cn").rstrip("/"),
            platform_base_url=(
                conf.get("IFLOW_PLATFORM_BASE_URL") or "https://platform.iflow.cn"
            ).rstrip("/"),
            proxy=conf.get("UPSTREAM_PROXY") or None,
        )


@dataclass
class TokenSet:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime  # aware, UTC
    token_type: str = "bearer"
    scope: str = ""


@dataclass
class UserInfo:
    api_key: str = field(repr=False)
    email: str = ""
    phone: str = ""


@dataclass
class CookieKey:
    """The platform's key. `api_key` is empty when the platform only showed a mask."""

    api_key: str = field(repr=False)
    expires_at: datetime | None  # aware, UTC (converted from China time)
    name: str
    has_expired: bool
    mask: str = ""  # apiKeyMask, e.g. "sk-****abcd" (not a secret)


def parse_expire_time(value: object) -> datetime | None:
    """The platform's `expireTime`: "YYYY-MM-DD HH:MM[:SS]" in China time (UTC+8) → aware UTC.
    Also accepts ISO-8601 with a zone and epoch seconds/milliseconds. None if unparseable."""
    if isinstance(value, bool) or value in (None, ""):
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        return datetime.fromtimestamp(seconds, UTC)
    if not isinstance(value, str):
        return None
    text = value.strip()
    for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d %H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=CHINA_TZ).astimezone(UTC)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=CHINA_TZ)
    return parsed.astimezone(UTC)


_BXAUTH_RE = re.compile(r"(?:^|[;\s])BXAuth=([^;\s]+)", re.IGNORECASE)


def normalize_bxauth(text: str) -> str:
    """The cookie's value from what a user pastes: the value, `BXAuth=…;`, or a whole
    `Cookie:` header. Raises ValueError when nothing usable is there."""
    text = (text or "").strip()
    if text.lower().startswith("cookie:"):
        text = text[len("cookie:"):].strip()
    match = _BXAUTH_RE.search(text)
    if match:
        value = match.group(1)
    elif "=" in text:
        raise ValueError("no BXAuth cookie in the pasted text")
    else:
        value = text.rstrip(";").strip()
    if not value or any(c in value for c in ";,\r\n\t \"\\") or not value.isprintable():
        raise ValueError("the BXAuth value is empty or contains invalid characters")
    return value


class _RedactTokenQuery(logging.Filter):
    """httpx logs each request's URL at INFO; getUserInfo's has the access token in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
                "accessToken=" in str(arg) for arg in record.args):
            record.args = tuple(redact(str(arg)) if "accessToken=" in str(arg) else arg
                                for arg in record.args)
        return True


def _install_log_redaction() -> None:
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactTokenQuery) for f in logger.filters):
            logger.addFilter(_RedactTokenQuery())


_install_log_redaction()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _scrub(text: object, secrets: tuple[str, ...], limit: int = 200) -> str:
    """Server text made safe to show: the secrets we sent are cut out, the length bounded."""
    message = " ".join(redact(str(text or ""), secrets).split())
    return message[:limit] + ("…" if len(message) > limit else "")


def _no_cookies_jar() -> http.cookiejar.CookieJar:
    # One client may serve many cookie accounts: never keep a Set-Cookie for the next call.
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class OAuthClient:
    """iFlow's OAuth and platform endpoints, over a sync `httpx.Client` created on first use.
    Thread-safe; `close()` it (or use it as a context manager) when done."""

    def __init__(
        self,
        config: OAuthConfig | None = None,
        transport: httpx.BaseTransport | None = None,
        *,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.config = config or OAuthConfig.from_settings()
        self.transport = transport
        self.now = now
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = self._new_http()
            return self._http

    def _new_http(self) -> httpx.Client:
        return httpx.Client(
            transport=self.transport,
            timeout=self.config.timeout,
            trust_env=False,
            proxy=self.config.proxy if self.transport is None else None,
            cookies=_no_cookies_jar(),
            follow_redirects=False,
        )

    def close(self) -> None:
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    def __enter__(self) -> OAuthClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- OAuth -------------------------------------------------------------------------------

    @property
    def _oauth_base(self) -> str:
        return self.config.oauth_base_url.rstrip("/")

    @property
    def _platform_base(self) -> str:
        return self.config.platform_base_url.rstrip("/")

    def authorize_url(self, redirect: str, state: str) -> str:
        """Where the browser logs in. iFlow's parameter is `redirect` (not `redirect_uri`), and
        `loginMethod` and `type` are required."""
        query = urlencode(
            {
                "client_id": self.config.client_id,
                "loginMethod": "phone",
                "type": "phone",
                "redirect": redirect,
                "state": state,
            },
            quote_via=quote,
        )
        return f"{self._oauth_base}/oauth?{query}"

    def exchange_code(self, code: str, redirect_uri: str) -> TokenSet:
        """The callback's code for tokens; `redirect_uri` must be the authorize `redirect`."""
        return self._token(
            {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri},
            secrets=(code,),
            old_refresh_token="",
        )

    def refresh(self, refresh_token: str) -> TokenSet:
        """New tokens; the old refresh token is kept when the answer has none."""
        return self._token(
            {"grant_type": "refresh_token", "refresh_token": refresh_token},
            secrets=(refresh_token,),
            old_refresh_token=refresh_token,
        )

    def user_info(self, access_token: str) -> UserInfo:
        """The chat key (not the access token!), email and phone. The token goes URL-encoded
        in the query, without an Authorization header."""
        url = f"{self._oauth_base}/api/oauth/getUserInfo?accessToken={quote(access_token, safe='')}"
        secrets = (access_token,)
        response = self._send("GET", url, "getUserInfo", secrets, headers={
            "Accept": "application/json"})
        self._check_status(response, "getUserInfo", secrets)
        body = self._json(response, "getUserInfo")
        data = body.get("data") if isinstance(body.get("data"), dict) else None
        if body.get("success") is not True or data is None:
            detail = _scrub(body.get("message") or body.get("msg") or body.get("code"), secrets)
            raise OAuthError("invalid_response", "getUserInfo failed" + (
                f": {detail}" if detail else ""), status=response.status_code)
        api_key = data.get("apiKey") or data.get("searchApiKey")
        if not isinstance(api_key, str) or not api_key.strip():
            raise OAuthError("invalid_response", "getUserInfo returned no apiKey",
                             status=response.status_code)
        return UserInfo(api_key=api_key.strip(), email=str(data.get("email") or ""),
                        phone=str(data.get("phone") or ""))

    # --- cookie login ------------------------------------------------------------------------

    def cookie_api_key(self, bxauth: str) -> CookieKey:
        """The platform's current key for a BXAuth cookie (possibly only a mask)."""
        response = self._send("GET", self._apikey_url, "apikey", (bxauth,),
                              headers=self._browser_headers(bxauth))
        return self._cookie_key(response, (bxauth,), require_key=False)

    def reissue_cookie_api_key(self, bxauth: str, name: str) -> CookieKey:
        """Ask the platform for a new key under `name` (the old one stops working)."""
        headers = self._browser_headers(bxauth)
        headers.update({"Content-Type": "application/json", "Origin": self._platform_base})
        response = self._send("POST", self._apikey_url, "apikey re-issue", (bxauth,),
                              headers=headers, content=json.dumps({"name": name}).encode())
        return self._cookie_key(response, (bxauth,), require_key=True)

    @property
    def _apikey_url(self) -> str:
        return f"{self._platform_base}/api/openapi/apikey"

    def _browser_headers(self, bxauth: str) -> dict[str, str]:
        return {
            "User-Agent": BROWSER_USER_AGENT,
            "Accept": "application/json, text/plain, */*",
            "Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8",
            "Referer": self._platform_base + "/",
            "Sec-Fetch-Dest": "empty",
            "Sec-Fetch-Mode": "cors",
            "Sec-Fetch-Site": "same-origin",
            "Cookie": f"BXAuth={bxauth};",
        }

    def _cookie_key(self, response: httpx.Response, secrets: tuple[str, ...],
                    *, require_key: bool) -> CookieKey:
        what = "apikey"
        if response.status_code in (401, 403):
            raise OAuthError("unauthorized", "the BXAuth cookie was refused (expired or "
                             "logged out)", status=response.status_code)
        self._check_status(response, what, secrets)
        body = self._json(response, what)
        if body.get("success") is not True:
            code = str(body.get("code") or "")
            detail = _scrub(body.get("message") or body.get("msg") or code, secrets)
            if code in {"401", "403"} or "登录" in detail or "login" in detail.lower():
                raise OAuthError("unauthorized", f"the BXAuth cookie was refused: {detail}",
                                 status=response.status_code)
            if self._overloaded(code, detail):
                raise OAuthError("overloaded", f"platform overloaded: {detail}",
                                 status=response.status_code)
            raise OAuthError("invalid_response", f"{what} failed" + (
                f": {detail}" if detail else ""), status=response.status_code)
        data = body.get("data")
        if not isinstance(data, dict):
            raise OAuthError("invalid_response", f"{what}: no data in the answer",
                             status=response.status_code)
        api_key = str(data.get("apiKey") or "").strip()
        mask = str(data.get("apiKeyMask") or "").strip()
        if "*" in api_key:  # a mask in the key field
            api_key, mask = "", mask or api_key
        if require_key and not api_key:
            raise OAuthError("invalid_response", f"{what}: the answer has no full apiKey",
                             status=response.status_code)
        return CookieKey(
            api_key=api_key,
            expires_at=parse_expire_time(data.get("expireTime")),
            name=str(data.get("name") or ""),
            has_expired=bool(data.get("hasExpired")),
            mask=mask,
        )

    # --- plumbing ----------------------------------------------------------------------------

    def _send(self, method: str, url: str, what: str, secrets: tuple[str, ...],
              **kwargs: Any) -> httpx.Response:
        # Exception texts may carry the URL (getUserInfo has the token in it): never use them.
        try:
            return self._client().request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise OAuthError("transient", f"{what}: timed out") from exc
        except httpx.HTTPError as exc:
            raise OAuthError("transient", f"{what}: {type(exc).__name__}") from exc
        except httpx.InvalidURL as exc:
            raise OAuthError("invalid_response", f"{what}: invalid URL (check the base URL "
                             "settings)") from exc

    @staticmethod
    def _overloaded(code: str, message: str) -> bool:
        low = message.lower()
        return code in {"429", "500", "503"} or any(word in low for word in _OVERLOADED_WORDS)

    def _check_status(self, response: httpx.Response, what: str,
                      secrets: tuple[str, ...]) -> None:
        status = response.status_code
        if status == 429:
            raise OAuthError("overloaded", f"{what}: HTTP 429 (rate limited)", status=status)
        if status >= 500:
            raise OAuthError("transient", f"{what}: HTTP {status}", status=status)
        if status in (401, 403):
            raise OAuthError("unauthorized", f"{what}: HTTP {status}", status=status)
        if not 200 <= status < 300:
            raise OAuthError("invalid_response", f"{what}: HTTP {status}", status=status)

    @staticmethod
    def _json(response: httpx.Response, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            kind = response.headers.get("content-type", "?").split(";")[0]
            raise OAuthError("invalid_response", f"{what}: HTTP {response.status_code} with "
                             f"a non-JSON body ({kind})", status=response.status_code) from exc
        if not isinstance(body, dict):
            raise OAuthError("invalid_response", f"{what}: the answer is not a JSON object",
                             status=response.status_code)
        return body

    def _token(self, form: dict[str, str], *, secrets: tuple[str, ...],
               old_refresh_token: str) -> TokenSet:
        config = self.config
        secrets = (*secrets, config.client_secret)
        basic = base64.b64encode(f"{config.client_id}:{config.client_secret}".encode()).decode()
        what = "token" if form["grant_type"] == "authorization_code" else "refresh"
        response = self._send(
            "POST", f"{self._oauth_base}/oauth/token", what, secrets,
            data={**form, "client_id": config.client_id, "client_secret": config.client_secret},
            headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
        )
        status = response.status_code
        body: dict[str, Any] | None = None
        if 400 <= status < 500:
            try:
                parsed = response.json()
                body = parsed if isinstance(parsed, dict) else None
            except ValueError:
                body = None
            error = str((body or {}).get("error") or "")
            if error == "invalid_grant":
                detail = _scrub((body or {}).get("error_description"), secrets)
                raise OAuthError("invalid_grant", f"{what}: invalid_grant" + (
                    f" ({detail})" if detail else "") + "; log in again", status=status)
            if status == 429:
                raise OAuthError("overloaded", f"{what}: HTTP 429 (rate limited)", status=status)
            if status in (401, 403) or error in {"invalid_client", "unauthorized_client"}:
                raise OAuthError("unauthorized", f"{what}: the OAuth client credentials were "
                                 f"refused (HTTP {status}{', ' + error if error else ''})",
                                 status=status)
            raise OAuthError("invalid_response", f"{what}: HTTP {status}" + (
                f" {_scrub(error, secrets)}" if error else ""), status=status)
        self._check_status(response, what, secrets)
        body = self._json(response, what)
        if "access_token" not in body and isinstance(body.get("data"), dict):
            body = {**body, **body["data"]}  # tolerate a {"success", "data": {...}} envelope
        if body.get("error") == "invalid_grant":
            raise OAuthError("invalid_grant", f"{what}: invalid_grant; log in again",
                             status=status)
        if body.get("success") is False:
            code = str(body.get("code") or "")
            detail = _scrub(body.get("message") or body.get("msg") or code, secrets)
            if self._overloaded(code, detail):
                raise OAuthError("overloaded", f"{what}: iFlow is overloaded ({detail})",
                                 status=status)
            raise OAuthError("invalid_response", f"{what} failed: {detail or 'success=false'}",
                             status=status)
        access_token = body.get("access_token")
        if not isinstance(access_token, str) or not access_token.strip():
            raise OAuthError("invalid_response", f"{what}: HTTP {status} without access_token",
                             status=status)
        refresh_token = body.get("refresh_token")
        if not isinstance(refresh_token, str) or not refresh_token.strip():
            refresh_token = old_refresh_token
        try:
            lifetime = timedelta(seconds=float(body.get("expires_in")))
            if lifetime.total_seconds() <= 0:
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            lifetime = DEFAULT_TOKEN_LIFETIME
        now = self.now()
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        return TokenSet(
            access_token=access_token.strip(),
            refresh_token=refresh_token.strip(),
            expires_at=(now + lifetime).astimezone(UTC),
            token_type=str(body.get("token_type") or "bearer"),
            scope=str(body.get("scope") or ""),
        )
