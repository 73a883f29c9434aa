"""Cache-friendly routing: the conversation a request belongs to, from what clients send, and
its pinned account (the store is accounts/affinity.py; docs/costs.md).

A conversation is named by (first found):
- Claude Code: the `x-claude-code-session-id` header, else `metadata.user_id` — a JSON string
  with a `session_id` (current versions) or `user_<hash>_account_<uuid>_session_<uuid>`
  (older ones), else that user id as it is;
- Codex: the `session-id` (or older `session_id`) header, else `prompt_cache_key`;
- OpenAI clients: `prompt_cache_key`, else `user` (or `safety_identifier`).
The key is scoped to the instance, the client key and the model, and hashed: a session id
never reaches Redis or a log.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accounts.affinity import LocalAffinity, RedisAffinity
    from accounts.services import AccountRef

VALUE_MAX = 512  # longer values are not ids


def _text(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value.strip()) <= VALUE_MAX:
        return value.strip()
    return None


def claude_code_session(user_id: str) -> str:
    """The session in Claude Code's metadata.user_id; the whole value when it has none."""
    if user_id.startswith("{"):
        try:
            data = json.loads(user_id)
        except ValueError:
            data = None
        session = _text(data.get("session_id")) if isinstance(data, dict) else None
        if session:
            return session
    head, found, session = user_id.rpartition("_session_")
    return session if found and head and session else user_id


def conversation_of(body: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
    """What names the request's conversation (see the module doc), tagged with its source."""
    for header in ("x-claude-code-session-id", "session-id", "session_id"):
        value = _text(headers.get(header))
        if value:
            return f"h:{value}"
    metadata = body.get("metadata")
    user_id = _text(metadata.get("user_id")) if isinstance(metadata, dict) else None
    if user_id:
        return f"cc:{claude_code_session(user_id)}"
    for field in ("prompt_cache_key", "user", "safety_identifier"):
        value = _text(body.get(field))
        if value:
            return f"{field}:{value}"
    return None


class Affinity:
    """One request's pin: the account to prefer, and what to remember once one is taken."""

    def __init__(self, store: LocalAffinity | RedisAffinity, key: str,
                 accounts: list[AccountRef]) -> None:
        self.store = store
        self.key = key
        self.known = {a.id for a in accounts}  # the accounts that may serve this request
        self.pinned: int | None = None

    @classmethod
    def of(cls, store: LocalAffinity | RedisAffinity, conversation: str | None, *,
           instance_id: int, key_id: int | None, model: str,
           accounts: list[AccountRef]) -> Affinity | None:
        if conversation is None:
            return None
        scope = f"{instance_id}\x00{key_id or 0}\x00{model}\x00{conversation}"
        return cls(store, hashlib.sha256(scope.encode()).hexdigest()[:32], accounts)

    async def preferred(self) -> int | None:
        if self.pinned is None:
            self.pinned = await self.store.get(self.key)
        return self.pinned

    async def served_by(self, account_id: int) -> None:
        """The pin follows the account that took the request only when the pinned one can no
        longer serve it at all (gone, blocked, out of the instance's accounts). A pinned account
        that is cooling down or busy keeps the pin: the conversation goes back once it is usable.
        Using the pinned account renews the pin's TTL."""
        if self.pinned is None or self.pinned not in self.known or self.pinned == account_id:
            self.pinned = account_id
            await self.store.set(self.key, account_id)
