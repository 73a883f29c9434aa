"""A fake iflow.cn (OAuth) and platform.iflow.cn (cookie login): two real HTTP servers on
127.0.0.1, each in a background thread (stdlib ThreadingHTTPServer).

Usage::

    with FakeOAuth() as fake:
        ...point IFLOW_OAUTH_BASE_URL at fake.oauth_base_url and IFLOW_PLATFORM_BASE_URL at
        fake.platform_base_url...
        callback = fake.approve(authorize_url)        # the URL the browser would land on
        fake.fail_next("refresh", "overloaded")        # quirks, one per call, in order
        assert fake.calls("refresh") == 1

The authorize page also works over HTTP: ``GET /oauth?…&auto=1`` answers 302 to the callback
(without ``auto`` it is a small page with an "Approve" link carrying ``auto=1``).

It checks what iFlow checked: the ``redirect`` (not ``redirect_uri``) authorize parameter with
``loginMethod=phone&type=phone``; Basic auth *and* form client credentials on the token endpoint;
single-use codes bound to their redirect; single-use refresh tokens when rotating (a reused one
answers 400 invalid_grant); the token in getUserInfo's query with no Authorization header; the
BXAuth cookie and, on re-issue, the Origin header and the key's name.

Call kinds for ``calls()`` / ``requests_of()`` / ``fail_next()``: ``authorize``, ``token``
(authorization_code), ``refresh``, ``userinfo``, ``apikey`` (GET), ``apikey_reissue`` (POST).
Quirks: ``overloaded`` (HTTP 200 success:false code 500 "…太多…"), ``no_access_token`` (HTTP 200
without access_token), ``invalid_grant`` (400), ``server_error`` (500), ``unauthorized`` (401),
``failure`` (HTTP 200 success:false), ``no_api_key`` (getUserInfo without apiKey),
``masked`` (apikey GET showing only apiKeyMask), ``not_json`` (an HTML page).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

DEFAULT_CLIENT_ID = "10009311001"
DEFAULT_CLIENT_SECRET = "4Z3YjXycVsQvyGF1etiNlIBB4RsqSDtW"
CHINA_TZ = timezone(timedelta(hours=8))

KINDS = ("authorize", "token", "refresh", "userinfo", "apikey", "apikey_reissue")
QUIRKS = ("overloaded", "no_access_token", "invalid_grant", "server_error", "unauthorized",
          "failure", "no_api_key", "masked", "not_json")


@dataclass
class FakeUser:
    api_key: str
    email: str = "user@example.com"
    phone: str = "13800000000"


@dataclass
class FakeCookie:
    """One platform.iflow.cn login (a BXAuth value) and its key."""

    api_key: str
    name: str = "iflow2api"
    expire_time: str = ""  # "YYYY-MM-DD HH:MM", China time
    has_expired: bool = False
    masked: bool = False  # GET shows only apiKeyMask

    @property
    def mask(self) -> str:
        return self.api_key[:3] + "*" * 8 + self.api_key[-4:]


@dataclass
class Recorded:
    kind: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    form: dict[str, str] = field(default_factory=dict)
    json: Any = None
    status: int | None = None

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


def china_time(moment: datetime) -> str:
    return moment.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeOAuth:
    def __init__(
        self,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        api_key: str = "sk-fake-oauth-key-0123456789abcdef",
        email: str = "user@example.com",
        phone: str = "13800000000",
        expires_in: int | None = 172800,
        rotate_refresh_tokens: bool = True,
        refresh_delay: float = 0.0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.user = FakeUser(api_key=api_key, email=email, phone=phone)
        self.expires_in = expires_in
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.refresh_delay = refresh_delay
        self.lock = threading.RLock()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._serial = itertools.count(1)
        self.reset()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        for site in ("oauth", "platform"):
            server = _Server(("127.0.0.1", 0), _handler_for(self, site))
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                      name=f"fake-{site}", daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def oauth_base_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def platform_base_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def reset(self) -> None:
        """Forget codes, tokens, cookies, quirks and the record (settings are kept)."""
        with self.lock:
            self.codes: dict[str, dict[str, Any]] = {}  # code -> {redirect, user, used}
            self.refresh_tokens: dict[str, dict[str, Any]] = {}  # token -> {user, used}
            self.access_tokens: dict[str, FakeUser] = {}
            self.cookies: dict[str, FakeCookie] = {}
            self.requests: list[Recorded] = []
            self._quirks: dict[str, deque[str]] = defaultdict(deque)
            self._calls: dict[str, int] = defaultdict(int)

    # --- test helpers ------------------------------------------------------------------------

    def calls(self, kind: str) -> int:
        assert kind in KINDS, kind
        with self.lock:
            return self._calls[kind]

    def requests_of(self, kind: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.kind == kind]

    def fail_next(self, kind: str, quirk: str, times: int = 1) -> None:
        assert kind in KINDS and quirk in QUIRKS, (kind, quirk)
        with self.lock:
            self._quirks[kind].extend([quirk] * times)

    def _quirk(self, kind: str) -> str | None:
        with self.lock:
            queue = self._quirks[kind]
            return queue.popleft() if queue else None

    def approve(self, authorize_url: str, *, api_key: str | None = None,
                email: str | None = None, phone: str | None = None) -> str:
        """The user logs in and approves: the callback URL with a fresh single-use code.
        Raises ValueError when the authorize URL is not one iFlow would accept."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
        error = self._check_authorize(query)
        if error:
            raise ValueError(error)
        user = FakeUser(api_key=api_key or self.user.api_key,
                        email=self.user.email if email is None else email,
                        phone=self.user.phone if phone is None else phone)
        return self._issue_code(query, user)

    def issue_tokens(self, user: FakeUser | None = None) -> tuple[str, str]:
        """A valid (access token, refresh token) pair, as after a login."""
        with self.lock:
            return self._new_tokens(user or FakeUser(**vars(self.user)))

    def add_cookie(self, bxauth: str | None = None, *, api_key: str | None = None,
                   name: str = "iflow2api", expire_time: str | None = None,
                   has_expired: bool = False, masked: bool = False) -> tuple[str, FakeCookie]:
        """Register a platform login; returns (BXAuth value, its record)."""
        bxauth = bxauth or "bx-" + secrets.token_urlsafe(24)
        cookie = FakeCookie(
            api_key=api_key or "sk-" + secrets.token_hex(16), name=name,
            expire_time=expire_time or china_time(datetime.now(UTC) + timedelta(days=30)),
            has_expired=has_expired, masked=masked)
        with self.lock:
            self.cookies[bxauth] = cookie
        return bxauth, cookie

    # --- protocol ----------------------------------------------------------------------------

    def _check_authorize(self, query: dict[str, str]) -> str | None:
        if query.get("client_id") != self.client_id:
            return "unknown client_id"
        if query.get("loginMethod") != "phone" or query.get("type") != "phone":
            return "loginMethod=phone and type=phone are required"
        if "redirect_uri" in query:
            return "iFlow's parameter is `redirect`, not `redirect_uri`"
        redirect = query.get("redirect", "")
        if not redirect.startswith(("http://", "https://")):
            return "missing or bad redirect"
        if not query.get("state"):
            return "missing state"
        return None

    def _issue_code(self, query: dict[str, str], user: FakeUser) -> str:
        code = f"code-{next(self._serial)}-{secrets.token_urlsafe(12)}"
        redirect = query["redirect"]
        with self.lock:
            self.codes[code] = {"redirect": redirect, "user": user, "used": False}
        sep = "&" if urlsplit(redirect).query else "?"
        return f"{redirect}{sep}{urlencode({'code': code, 'state': query['state']})}"

    def _new_tokens(self, user: FakeUser) -> tuple[str, str]:
        n = next(self._serial)
        # "+/=" so that a token sent without URL-encoding is not recognised.
        access = f"at-{n}-{secrets.token_urlsafe(16)}+/="
        refresh = f"rt-{n}-{secrets.token_urlsafe(16)}+/="
        self.access_tokens[access] = user
        self.refresh_tokens[refresh] = {"user": user, "used": False}
        return access, refresh

    def _token_answer(self, access: str, refresh: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"access_token": access, "token_type": "bearer", "scope": "read"}
        if refresh:
            body["refresh_token"] = refresh
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return body

    def _client_ok(self, headers: dict[str, str], form: dict[str, str]) -> bool:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        return (headers.get("authorization") == f"Basic {expected}"
                and form.get("client_id") == self.client_id
                and form.get("client_secret") == self.client_secret)

    def handle_token(self, rec: Recorded) -> tuple[int, Any]:
        form = rec.form
        grant = form.get("grant_type")
        rec.kind = "refresh" if grant == "refresh_token" else "token"
        with self.lock:
            self._calls[rec.kind] += 1
        if rec.kind == "refresh" and self.refresh_delay:
            time.sleep(self.refresh_delay)
        quirk = self._quirk(rec.kind)
        if quirk:
            return _quirk_answer(quirk)
        if not self._client_ok(rec.headers, form):
            return 401, {"error": "invalid_client"}
        with self.lock:
            if grant == "authorization_code":
                entry = self.codes.get(form.get("code", ""))
                if entry is None or entry["used"]:
                    return 400, {"error": "invalid_grant",
                                 "error_description": "invalid or used code"}
                entry["used"] = True
                if form.get("redirect_uri") != entry["redirect"]:
                    return 400, {"error": "invalid_grant",
                                 "error_description": "redirect_uri mismatch"}
                access, refresh = self._new_tokens(entry["user"])
                return 200, self._token_answer(access, refresh)
            if grant == "refresh_token":
                old = form.get("refresh_token", "")
                entry = self.refresh_tokens.get(old)
                if entry is None or entry["used"]:
                    return 400, {"error": "invalid_grant",
                                 "error_description": "invalid refresh token"}
                if self.rotate_refresh_tokens:
                    entry["used"] = True
                    access, refresh = self._new_tokens(entry["user"])
                    return 200, self._token_answer(access, refresh)
                access, _ = self._new_tokens(entry["user"])
                return 200, self._token_answer(access, None)  # no refresh_token: keep the old
        return 400, {"error": "unsupported_grant_type"}

    def handle_userinfo(self, rec: Recorded) -> tuple[int, Any]:
        quirk = self._quirk("userinfo")
        if quirk == "no_api_key":
            return 200, {"success": True, "data": {"email": self.user.email}}
        if quirk:
            return _quirk_answer(quirk)
        with self.lock:
            user = self.access_tokens.get(rec.query.get("accessToken", ""))
        if user is None or "authorization" in rec.headers:
            return 200, {"success": False, "code": "401", "message": "accessToken invalid"}
        return 200, {"success": True, "code": "200", "data": {
            "apiKey": user.api_key, "email": user.email, "phone": user.phone,
            "userId": "u-1", "nickName": "fake"}}

    def handle_apikey(self, rec: Recorded) -> tuple[int, Any]:
        quirk = self._quirk(rec.kind)
        match = re.search(r"(?:^|;\s*)BXAuth=([^;]+)", rec.header("cookie") or "")
        with self.lock:
            cookie = self.cookies.get(match.group(1)) if match else None
        if quirk == "masked" and cookie is not None:
            return 200, _key_data(cookie, masked=True)
        if quirk:
            return _quirk_answer(quirk)
        if cookie is None:
            return 401, {"success": False, "code": "401", "message": "未登录"}
        if rec.method == "GET":
            return 200, _key_data(cookie, masked=cookie.masked)
        if rec.header("origin") != self.platform_base_url:
            return 403, {"success": False, "code": "403", "message": "bad origin"}
        if not isinstance(rec.json, dict) or rec.json.get("name") != cookie.name:
            return 200, {"success": False, "code": "400", "message": "name mismatch"}
        with self.lock:
            cookie.api_key = "sk-" + secrets.token_hex(16)
            cookie.expire_time = china_time(datetime.now(UTC) + timedelta(days=30))
            cookie.has_expired = False
        return 200, _key_data(cookie, masked=False)


def _key_data(cookie: FakeCookie, *, masked: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"name": cookie.name, "expireTime": cookie.expire_time,
                            "hasExpired": cookie.has_expired}
    if masked:
        data["apiKeyMask"] = cookie.mask
    else:
        data["apiKey"] = cookie.api_key
    return {"success": True, "code": "200", "data": data}


def _quirk_answer(quirk: str) -> tuple[int, Any]:
    if quirk == "overloaded":
        return 200, {"success": False, "code": "500", "message": "当前请求太多，请稍后重试"}
    if quirk == "no_access_token":
        return 200, {"token_type": "bearer", "expires_in": 3600, "scope": "read"}
    if quirk == "invalid_grant":
        return 400, {"error": "invalid_grant", "error_description": "refresh token expired"}
    if quirk == "server_error":
        return 500, {"error": "server_error"}
    if quirk == "unauthorized":
        return 401, {"success": False, "code": "401", "message": "未登录"}
    if quirk == "failure":
        return 200, {"success": False, "code": "400", "message": "something failed"}
    if quirk == "not_json":
        return 200, "<html><body>maintenance</body></html>"
    raise AssertionError(f"quirk {quirk!r} does not apply here")


def _handler_for(fake: FakeOAuth, site: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def _dispatch(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            rec = Recorded(kind="?", method=self.command, path=parts.path,
                           query={k: v[0] for k, v in parse_qs(parts.query).items()},
                           headers=headers)
            ctype = headers.get("content-type", "")
            if "x-www-form-urlencoded" in ctype:
                rec.form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            elif "json" in ctype and raw:
                try:
                    rec.json = json.loads(raw)
                except ValueError:
                    rec.json = None
            route = (site, self.command, parts.path)
            if route == ("oauth", "GET", "/oauth"):
                rec.kind = "authorize"
            elif route == ("oauth", "POST", "/oauth/token"):
                rec.kind = "token"  # refined by grant type
            elif route == ("oauth", "GET", "/api/oauth/getUserInfo"):
                rec.kind = "userinfo"
            elif site == "platform" and parts.path == "/api/openapi/apikey":
                rec.kind = {"GET": "apikey", "POST": "apikey_reissue"}.get(self.command, "?")
            if rec.kind == "?":
                return self._send(rec, 404, {"error": "not found"})
            with fake.lock:
                fake.requests.append(rec)
                if rec.kind not in ("token",):
                    fake._calls[rec.kind] += 1
            if rec.kind == "authorize":
                return self._authorize(rec)
            if rec.kind == "token":
                status, body = fake.handle_token(rec)
            elif rec.kind == "userinfo":
                status, body = fake.handle_userinfo(rec)
            else:
                status, body = fake.handle_apikey(rec)
            self._send(rec, status, body)

        def _authorize(self, rec: Recorded) -> None:
            error = fake._check_authorize(rec.query)
            if error:
                return self._send(rec, 400, f"<p>{error}</p>")
            if rec.query.get("auto"):
                location = fake._issue_code(rec.query, FakeUser(**vars(fake.user)))
                rec.status = 302
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            approve = self.path + "&auto=1"
            return self._send(rec, 200, f'<p>Log in to iFlow</p><a href="{approve}">Approve</a>')

        def _send(self, rec: Recorded, status: int, body: Any) -> None:
            rec.status = status
            if isinstance(body, str):
                data, ctype = body.encode(), "text/html; charset=utf-8"
            else:
                data, ctype = json.dumps(body, ensure_ascii=False).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
