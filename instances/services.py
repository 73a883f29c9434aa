"""What the proxy asks of instances: the settings of the instance a request came in on, and
who its client key is.

Like the routing snapshot in accounts.services, the hot path reads an in-memory directory of
instances and key hashes rebuilt at most every few seconds: an admin change reaches every
process within that time, and a request costs no database round trip. The directory is the
process's Runtime's (proxy/runtime.py builds it with `directory_snapshot()`); an admin change
marks it stale at once (`invalidate_directory`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from accounts import config_version
from iflow2api_lib.scope import runtime_of
from iflow2api_lib.snapshot import Snapshot
from instances.models import DEFAULT_INSTANCE, ClientKey, Instance, hash_key
from instances.ratelimit import RuleSet

DIRECTORY_TTL_SECONDS = 2.0
ENV_KEY_NAME = "from IFLOW2API_API_KEYS"


@dataclass(frozen=True)
class KeyRef:
    id: int
    instance_id: int
    name: str
    prefix: str
    models: frozenset[str]  # empty: every model
    expires_at: float | None  # epoch seconds
    enabled: bool

    @property
    def label(self) -> str:
        return f"{self.name} ({self.prefix}…)" if self.name else f"{self.prefix}…"

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or time.time())

    def allows(self, *names: str) -> bool:
        if not self.models:
            return True
        lowered = {m.lower() for m in self.models}
        return any(name.lower() in lowered for name in names if name)


@dataclass(frozen=True)
class InstanceConfig:
    """An instance's settings with the global defaults filled in."""

    id: int | None
    name: str
    preserve_reasoning: bool
    default_model: str
    claude_tiers: tuple[tuple[str, str], ...]
    model_aliases: dict[str, str]
    account_ids: frozenset[int]  # empty: every account
    vision_model: str
    upstream_proxy: str | None
    cors_origins: tuple[str, ...]
    log_bodies: bool
    requires_key: bool  # the instance has keys: every request must bring one

    def tier_model(self, name: str) -> str:
        lowered = name.lower()
        for tier, target in self.claude_tiers:
            if tier in lowered:
                return target
        return self.default_model


def global_config(name: str = DEFAULT_INSTANCE, instance_id: int | None = None) -> InstanceConfig:
    conf = settings.IFLOW2API
    return InstanceConfig(
        id=instance_id, name=name,
        preserve_reasoning=conf["PRESERVE_REASONING_CONTENT"],
        default_model=conf["DEFAULT_MODEL"],
        claude_tiers=tuple(conf["CLAUDE_TIERS"].items()),
        model_aliases={},
        account_ids=frozenset(),
        vision_model=conf["VISION_MODEL"],
        upstream_proxy=conf["UPSTREAM_PROXY"],
        cors_origins=tuple(conf["CORS_ALLOWED_ORIGINS"]),
        log_bodies=False,
        requires_key=False,
    )


def config_of(instance: Instance, account_ids: frozenset[int], has_keys: bool) -> InstanceConfig:
    base = global_config(instance.name, instance.pk)
    tiers = dict(base.claude_tiers)
    tiers.update({k.lower(): v for k, v in (instance.claude_tiers or {}).items()})
    default_model = instance.default_model.strip() or base.default_model
    if instance.default_model.strip():  # tiers not set on the instance follow its default
        for tier in tiers:
            if tier not in {k.lower() for k in instance.claude_tiers or {}}:
                tiers[tier] = default_model
    return InstanceConfig(
        id=instance.pk, name=instance.name,
        preserve_reasoning=base.preserve_reasoning if instance.preserve_reasoning_content is None
        else instance.preserve_reasoning_content,
        default_model=default_model,
        claude_tiers=tuple(tiers.items()),
        model_aliases=dict(instance.model_aliases or {}),
        account_ids=account_ids,
        vision_model=instance.vision_model.strip() or base.vision_model,
        upstream_proxy=instance.upstream_proxy.strip() or base.upstream_proxy,
        cors_origins=tuple(instance.origins) or base.cors_origins,
        log_bodies=instance.log_bodies,
        requires_key=has_keys,
    )


@dataclass
class Directory:
    instances: dict[int, InstanceConfig] = field(default_factory=dict)  # by id
    keys: dict[str, KeyRef] = field(default_factory=dict)  # by key hash
    rules: RuleSet = field(default_factory=RuleSet)

    def instance(self, instance_id: int | None) -> InstanceConfig | None:
        """The instance a listener serves (runtime.instance_for_port), or None when it cannot
        be resolved (deleted, or not in this snapshot yet): the caller refuses the request
        rather than serve it with another instance's policy. `instance_id` None: this process
        opened no listener of its own; the default instance then."""
        if instance_id is not None:
            return self.instances.get(instance_id)
        found = next((i for i in self.instances.values() if i.name == DEFAULT_INSTANCE), None)
        return found or global_config()  # a database without instances yet (tests)

    def key(self, given: str) -> KeyRef | None:
        return self.keys.get(hash_key(given)) if given else None


def load_directory() -> Directory:
    close_old_connections()
    directory = Directory()
    rows = list(Instance.objects.prefetch_related("accounts"))
    with_keys = set(ClientKey.objects.values_list("instance_id", flat=True).distinct())
    for row in rows:
        ids = frozenset(a.pk for a in row.accounts.all())
        directory.instances[row.pk] = config_of(row, ids, row.pk in with_keys)
    for key in ClientKey.objects.all():
        directory.keys[key.key_hash] = KeyRef(
            id=key.pk, instance_id=key.instance_id, name=key.name, prefix=key.prefix,
            models=frozenset(key.models), enabled=key.enabled,
            expires_at=key.expires_at.timestamp() if key.expires_at else None)
    from instances.ratelimit import rule_refs

    directory.rules = RuleSet(rule_refs())
    return directory


def directory_snapshot() -> Snapshot[Directory]:
    """A process's instance directory (its Runtime holds it; tests build their own)."""
    return Snapshot(load_directory, DIRECTORY_TTL_SECONDS, version=config_version.read)


class HoldsDirectory(Protocol):
    """What holds a process's directory: its Runtime (proxy/runtime.py)."""

    directory: Snapshot[Directory]


def directory_of(request: object) -> Snapshot[Directory] | None:
    """The directory of the process serving `request` (an admin page under the gateway's ASGI
    app); None elsewhere (Django's test client, a command)."""
    runtime: HoldsDirectory | None = runtime_of(request)
    return runtime.directory if runtime is not None else None


def invalidate_directory(directory: Snapshot[Directory] | None) -> None:
    """Instances, keys or rate rules changed: `directory` is rebuilt at its next read (None:
    the process holds none)."""
    if directory is not None:
        directory.invalidate()


# --- set-up at start ----------------------------------------------------------------------------


def ensure_default_instance(host: str, port: int) -> Instance:
    """The instance on 28000 (or IFLOW2API_HOST/PORT) that every installation starts with."""
    instance, _ = Instance.objects.get_or_create(
        name=DEFAULT_INSTANCE, defaults={"host": host, "port": port})
    return instance


@transaction.atomic
def import_environment_keys(instance: Instance, keys: list[str]) -> int:
    """IFLOW2API_API_KEYS: stored hashed as keys of `instance`; keys since removed from the
    variable are deleted. Returns how many are in force."""
    wanted = {hash_key(k): k for k in keys if k}
    stale = ClientKey.objects.filter(instance=instance, name=ENV_KEY_NAME).exclude(
        key_hash__in=wanted)
    stale.delete()
    for digest, key in wanted.items():
        if not ClientKey.objects.filter(key_hash=digest).exists():
            row = ClientKey(instance=instance, name=ENV_KEY_NAME)
            row.set_key(key)
            row.save()
    return len(wanted)


def usable_key_count(instance: Instance) -> int:
    return ClientKey.objects.usable().filter(instance=instance).count()


def set_state(instance_id: int, state: str, message: str = "", listening_on: str = "") -> None:
    """The server's word on an instance: its state, why, and the host:port it is bound to."""
    Instance.objects.filter(pk=instance_id).update(
        state=state, state_message=message[:300], state_changed_at=timezone.now(),
        listening_on=listening_on[:300])
