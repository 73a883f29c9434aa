"""Stored Responses API answers (proxy.models.StoredResponse): what `previous_response_id`,
GET/DELETE /v1/responses/{id} and input_items read. Each row holds its request's own input
items; what came before (a chain of `previous_response_id`) is rebuilt from the earlier rows.

Ownership: a stored response is found only on the instance it was made on and with the client
key that made it (an instance without keys: the instance's requests, key null). Anything else
is "not found", the same as an unknown id, so ids cannot be probed. Retention:
RESPONSES_RETENTION_DAYS; older rows are never served and the cleanup task (proxy/tasks.py)
deletes them. Sync functions (the ORM): the handlers call them in a worker thread.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.db.models import QuerySet
from django.utils import timezone

from proxy.models import StoredResponse

log = logging.getLogger(__name__)
T = TypeVar("T")

# How far back a previous_response_id chain is followed (each link is one stored response).
MAX_CHAIN = 10_000
# Without a Celery beat, expired rows are also deleted by the server itself, at most this often.
INLINE_CLEANUP_SECONDS = 3600.0

# Item ids the API gives input items that came without one, by item type.
_ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco",
                "custom_tool_call": "ctc", "custom_tool_call_output": "ctco", "reasoning": "rs"}


@dataclass(frozen=True)
class Owner:
    """Who may see a stored response: the instance (by name) and the client key's id."""

    instance: str
    key_id: int | None


async def run(work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`work` (one of the functions below) in the ORM's thread, off the event loop, on a
    connection that is not stale (as channels' database_sync_to_async does)."""

    def call() -> T:
        close_old_connections()
        try:
            return work(*args, **kwargs)
        finally:
            close_old_connections()

    return await sync_to_async(call)()


def retention() -> timedelta:
    return timedelta(days=float(settings.IFLOW2API["RESPONSES_RETENTION_DAYS"]))


def storing_enabled() -> bool:
    return retention() > timedelta(0)


def _visible(owner: Owner) -> QuerySet[StoredResponse]:
    return StoredResponse.objects.filter(instance=owner.instance, key_id=owner.key_id,
                                         created_at__gt=timezone.now() - retention())


def find(response_id: str, owner: Owner) -> StoredResponse | None:
    return _visible(owner).filter(id=response_id).first()


def with_item_ids(items: list[dict[str, Any]], response_id: str) -> list[dict[str, Any]]:
    """Input items as stored and listed: each with an id (the client's, or one derived from
    the response id and the position, as the API gives every input item one)."""
    out = []
    for position, item in enumerate(items):
        if not isinstance(item.get("id"), str) or not item["id"]:
            prefix = _ID_PREFIXES.get(str(item.get("type", "message")), "item")
            digest = hashlib.sha256(f"{response_id}\x00in\x00{position}".encode()).hexdigest()
            item = {"id": f"{prefix}_{digest[:32]}",
                    **{key: value for key, value in item.items() if key != "id"}}
        out.append(item)
    return out


def conversation(response_id: str, owner: Owner) -> list[dict[str, Any]] | None:
    """The items a follow-up of `response_id` continues from: for each response of the chain,
    oldest first, its input items then its output items. None when `response_id` itself is not
    found; a link further back that is gone (deleted, expired) starts the conversation there."""
    chain: list[StoredResponse] = []
    next_id: str = response_id
    while next_id and len(chain) < MAX_CHAIN:
        found = find(next_id, owner)
        if found is None:
            if not chain:
                return None
            log.info("responses: %s continues %s, which is gone; the conversation starts after "
                     "it", chain[-1].id, next_id)
            break
        chain.append(found)
        next_id = found.previous_response_id
    items: list[dict[str, Any]] = []
    for stored in reversed(chain):
        items += stored.input_items
        items += [item for item in stored.response.get("output") or []
                  if isinstance(item, dict)]
    return items


class ExpiryCleanup:
    """Deletes expired stored responses now and then as answers are saved, so a server without
    a Celery beat keeps to RESPONSES_RETENTION_DAYS too. One per process (the Runtime's)."""

    def __init__(self, every_seconds: float = INLINE_CLEANUP_SECONDS) -> None:
        self.every_seconds = every_seconds
        self.last_run: float | None = None

    def run_if_due(self) -> None:
        now = time.monotonic()
        if self.last_run is not None and now - self.last_run < self.every_seconds:
            return
        self.last_run = now
        try:
            delete_expired()
        except Exception:  # the answer is stored; the next cleanup tries again
            log.exception("responses: the cleanup of expired stored responses failed")


def save(response: dict[str, Any], *, owner: Owner, input_items: list[dict[str, Any]],
         instructions: str | None, cleanup: ExpiryCleanup | None = None) -> None:
    """Keeps a finished response (completed or incomplete); then runs `cleanup` if due."""
    StoredResponse.objects.create(
        id=response["id"], instance=owner.instance, key_id=owner.key_id,
        model=str(response.get("model") or "")[:200],
        created_at=datetime.fromtimestamp(response.get("created_at") or time.time(),
                                          tz=UTC),
        previous_response_id=response.get("previous_response_id") or "",
        input_items=input_items, instructions=instructions or "", response=response)
    if cleanup is not None:
        cleanup.run_if_due()


def delete(response_id: str, owner: Owner) -> bool:
    deleted, _ = _visible(owner).filter(id=response_id).delete()
    return deleted > 0


def delete_expired() -> int:
    """Deletes the responses older than the retention; the number deleted."""
    deleted, _ = StoredResponse.objects.filter(
        created_at__lte=timezone.now() - retention()).delete()
    if deleted:
        log.info("responses: deleted %d stored responses past RESPONSES_RETENTION_DAYS", deleted)
    return deleted



def listed_input_items(response_id: str, owner: Owner) -> list[dict[str, Any]] | None:
    """What GET …/input_items lists for `response_id`, oldest first: every item the response
    was generated from, as the API lists it — the conversation inherited through
    `previous_response_id` (each earlier response's input then output items, as `conversation`
    rebuilds it) followed by the request's own input. None when `response_id` is not found."""
    stored = find(response_id, owner)
    if stored is None:
        return None
    inherited = (conversation(stored.previous_response_id, owner)
                 if stored.previous_response_id else None)
    return [*(inherited or []), *stored.input_items]
