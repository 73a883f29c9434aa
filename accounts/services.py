"""What the proxy asks of accounts: which model is which, and which account serves it.

The hot path reads an in-memory snapshot of the catalogue and accounts, rebuilt at most every
few seconds, so a chat request costs no database round trip. The snapshot is the process's
Runtime's (proxy/runtime.py builds it with `routing_snapshot()`); code that changes accounts
marks it stale (`invalidate_routing`), so this process sees the change at once and the others
within SNAPSHOT_TTL_SECONDS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from django.conf import settings
from django.db import close_old_connections
from django.db.models import Q
from django.utils import timezone

from accounts import config_version
from accounts.models import Account, ModelInfo
from accounts.pricing import Prices, prices_of
from iflow2api_lib.scope import runtime_of
from iflow2api_lib.snapshot import Snapshot
from upstream.types import UpstreamTarget

SNAPSHOT_TTL_SECONDS = 2.0


@dataclass(frozen=True)
class AccountRef:
    """An account as the proxy needs it, secrets decrypted."""

    id: int
    provider: str
    label: str
    base_url: str
    api_key: str
    session_id: str
    conversation_id: str
    max_concurrency: int = 0  # 0: no limit
    cooldown_until: float | None = None  # epoch seconds
    # Anthropic-compatible accounts (UpstreamTarget says what each means).
    auth_header: str = "x-api-key"
    anthropic_version: str = "2023-06-01"
    beta_policy: str = "drop"
    beta_allowlist: tuple[str, ...] = ()
    # Some catalogue model is linked to it: it serves those models only, not the unlinked ones
    # of its provider (which are left to the provider's accounts without a list of their own).
    lists_models: bool = False


def beta_names(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """An allow-list as a tuple, from the stored comma-separated text (or a tuple already)."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(b.strip() for b in items if b and b.strip())


def target_for(account: AccountRef | Account, proxy: str | None = None) -> UpstreamTarget:
    """Where and as whom to call an account's upstream (a routing snapshot's or a model's),
    through `proxy` (default UPSTREAM_PROXY)."""
    return UpstreamTarget(
        provider=account.provider,
        base_url=account.base_url,
        api_key=account.api_key,
        session_id=account.session_id,
        conversation_id=account.conversation_id,
        account_id=account.id,
        proxy_url=proxy or settings.IFLOW2API["UPSTREAM_PROXY"],
        auth_header=account.auth_header,
        anthropic_version=account.anthropic_version,
        beta_policy=account.beta_policy,
        beta_allowlist=beta_names(account.beta_allowlist),
    )


@dataclass(frozen=True)
class ModelRef:
    id: str
    provider: str
    upstream_id: str
    display_name: str
    owned_by: str
    created: int
    context_length: int | None
    max_output_tokens: int | None
    vision: bool
    aliases: tuple[str, ...]
    account_ids: tuple[int, ...]
    prices: Prices | None = None  # None: requests of this model show "cost unknown"


@dataclass
class Routing:
    models: list[ModelRef] = field(default_factory=list)
    by_name: dict[str, ModelRef] = field(default_factory=dict)
    accounts: list[AccountRef] = field(default_factory=list)

    def find_model(self, name: str) -> ModelRef | None:
        return self.by_name.get(name) or self.by_name.get(name.lower())

    def accounts_for(self, model: ModelRef, allowed: frozenset[int] = frozenset()
                     ) -> list[AccountRef]:
        """The usable accounts serving `model`: those linked to it, or when none is linked,
        every account of its provider that has no model list of its own (an account linked to
        some models serves those only); only those in `allowed` when it is not empty (an
        instance's account list)."""
        if model.account_ids:
            found = [a for a in self.accounts if a.id in model.account_ids]
        else:
            found = [a for a in self.accounts
                     if a.provider == model.provider and not a.lists_models]
        return [a for a in found if a.id in allowed] if allowed else found

    def serves(self, model: ModelRef, allowed: frozenset[int] = frozenset()) -> bool:
        """Whether some usable account (enabled, not blocked or needing a login; cooling down
        counts: it comes back by itself) can serve `model`: what GET /v1/models lists."""
        return bool(self.accounts_for(model, allowed))

    @property
    def has_upstream(self) -> bool:
        return bool(self.accounts)


def load_routing() -> Routing:
    # Runs outside Django's request cycle (the API fast path): drop a broken or expired
    # connection here, as the request signals would.
    close_old_connections()
    end_cooldowns()
    routing = Routing()
    unusable = [Account.State.BLOCKED, Account.State.NEEDS_LOGIN]
    listing = accounts_with_models()
    for account in Account.objects.filter(enabled=True).exclude(state__in=unusable):
        routing.accounts.append(
            AccountRef(
                id=account.pk,
                provider=account.provider,
                label=account.label,
                base_url=account.base_url,
                api_key=account.api_key,
                session_id=account.session_id,
                conversation_id=account.conversation_id,
                max_concurrency=account.max_concurrency,
                cooldown_until=account.cooldown_until.timestamp()
                if account.cooldown_until else None,
                auth_header=account.auth_header,
                anthropic_version=account.anthropic_version,
                beta_policy=account.beta_policy,
                beta_allowlist=beta_names(account.beta_allowlist),
                lists_models=account.pk in listing,
            )
        )
    for info in ModelInfo.objects.filter(enabled=True).prefetch_related("accounts"):
        ref = ModelRef(
            id=info.model_id,
            provider=info.provider,
            upstream_id=info.upstream_id or info.model_id,
            display_name=info.display_name or info.model_id,
            owned_by=info.owned_by or info.provider,
            created=int(info.created_at.timestamp()),
            context_length=info.context_length,
            max_output_tokens=info.max_output_tokens,
            vision=info.vision,
            aliases=tuple(str(a) for a in info.aliases or ()),
            account_ids=tuple(a.pk for a in info.accounts.all()),
            prices=prices_of(info),
        )
        routing.models.append(ref)
        for name in (ref.id, *ref.aliases):
            routing.by_name.setdefault(name, ref)
            routing.by_name.setdefault(name.lower(), ref)
    return routing


def end_cooldowns() -> None:
    """A cooldown ends by itself: show the account as active again once it is over (the
    change moves the configuration version: the snapshots reload)."""
    Account.objects.filter(state=Account.State.COOLING, cooldown_until__lt=timezone.now()).update(
        state=Account.State.ACTIVE, cooldown_until=None)


def routing_version() -> int | None:
    close_old_connections()
    end_cooldowns()  # before the read: a cooldown it ends moves the number
    return config_version.read()


def routing_snapshot() -> Snapshot[Routing]:
    """A process's routing snapshot (its Runtime holds it; tests build their own)."""
    return Snapshot(load_routing, SNAPSHOT_TTL_SECONDS, version=routing_version)


class HoldsRouting(Protocol):
    """What holds a process's routing snapshot: its Runtime (proxy/runtime.py)."""

    routing: Snapshot[Routing]


def routing_of(request: object) -> Snapshot[Routing] | None:
    """The routing snapshot of the process serving `request` (an admin page under the
    gateway's ASGI app); None elsewhere (Django's test client, a command: no snapshot to
    keep fresh in that process)."""
    runtime: HoldsRouting | None = runtime_of(request)
    return runtime.routing if runtime is not None else None


def invalidate_routing(routing: Snapshot[Routing] | None) -> None:
    """Accounts or models changed: `routing` is rebuilt at its next read (None: nothing to
    do, the process holds no snapshot)."""
    if routing is not None:
        routing.invalidate()


def accounts_with_models() -> set[int]:
    """The accounts some catalogue model (enabled or not) is linked to: each serves its own
    list of models only."""
    links = ModelInfo.accounts.through.objects.values_list("account_id", flat=True)
    return set(links.distinct())


def served_model_ids() -> set[str]:
    """The catalogue's model ids that some usable account serves now (for the admin's served /
    not served marker; the API reads the same from its snapshot through Routing.serves)."""
    table = load_routing()
    return {model.id for model in table.models if table.serves(model)}


def out_of_rotation(model: ModelRef, allowed: frozenset[int]) -> list[Account]:
    """The accounts that would serve `model` (within `allowed`, when set) but are out of
    rotation: disabled, blocked or needing a login. For saying why nothing can serve it."""
    accounts = (Account.objects.filter(pk__in=model.account_ids) if model.account_ids
                else Account.objects.filter(provider=model.provider)
                .exclude(pk__in=accounts_with_models()))
    if allowed:
        accounts = accounts.filter(pk__in=allowed)
    unusable = [Account.State.BLOCKED, Account.State.NEEDS_LOGIN]
    return list(accounts.filter(Q(enabled=False) | Q(state__in=unusable)).order_by("id"))
