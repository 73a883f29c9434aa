"""Instances (one API listener each), the client keys that may call them, and rate rules."""

from __future__ import annotations

import hashlib
import secrets

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

DEFAULT_INSTANCE = "default"
KEY_MARK = "sk-i2a-"
PREFIX_LENGTH = 12  # "sk-i2a-" and 5 random characters: enough to tell keys apart in a list


def split_list(text: str) -> list[str]:
    """Entries of a comma- or newline-separated admin field."""
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


class Instance(models.Model):
    """One API on its own host:port, with its own settings. Empty settings fall back to the
    global ones (environment)."""

    class State(models.TextChoices):
        STOPPED = "stopped", "Stopped"
        RUNNING = "running", "Running"
        ERROR = "error", "Error"

    name = models.SlugField(max_length=64, unique=True)
    host = models.CharField(max_length=255, default="127.0.0.1",
                            help_text="127.0.0.1 serves this computer only; 0.0.0.0 serves the "
                            "network (needs a client key).")
    port = models.PositiveIntegerField(
        unique=True, validators=[MinValueValidator(1), MaxValueValidator(65535)])
    enabled = models.BooleanField(default=True)

    preserve_reasoning_content = models.BooleanField(
        null=True, blank=True, verbose_name="preserve reasoning_content",
        help_text="OpenAI chat: keep the reasoning as its own field (yes), merge it into the "
        "content (no), or follow PRESERVE_REASONING_CONTENT (unknown).")
    default_model = models.CharField(
        max_length=200, blank=True,
        help_text="Model for unknown names from Anthropic clients; empty: DEFAULT_MODEL.")
    claude_tiers = models.JSONField(
        default=dict, blank=True, verbose_name="claude-* tier map",
        help_text='e.g. {"opus": "glm-5", "sonnet": "glm-5", "haiku": "qwen3-coder-plus"}; '
        "missing tiers follow CLAUDE_*_MODEL.")
    model_aliases = models.JSONField(
        default=dict, blank=True,
        help_text='Extra model names and what they stand for, e.g. {"gpt-4o": "glm-5"}.')
    accounts = models.ManyToManyField(
        "accounts.Account", blank=True, related_name="instances",
        help_text="Upstream accounts this instance may use; none selected: all of them.")
    vision_model = models.CharField(
        max_length=200, blank=True,
        help_text="Where requests with images go when their model cannot see; empty: "
        "VISION_MODEL.")
    upstream_proxy = models.CharField(
        max_length=300, blank=True,
        help_text="http://host:port or socks5://host:port for calls to the upstream; empty: "
        "UPSTREAM_PROXY.")
    cors_allowed_origins = models.TextField(
        blank=True, verbose_name="CORS allowed origins",
        help_text="Browser origins that may call this API, comma or newline separated; * for "
        "any (without credentials); empty: CORS_ALLOWED_ORIGINS.")
    log_bodies = models.BooleanField(
        default=False, help_text="Store request and response bodies in the request log.")

    # Written by the server that runs the instance.
    state = models.CharField(max_length=16, choices=State.choices, default=State.STOPPED,
                             editable=False)
    state_message = models.CharField(max_length=300, blank=True, editable=False)
    state_changed_at = models.DateTimeField(null=True, blank=True, editable=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["port"]

    def __str__(self) -> str:
        return f"{self.name} ({self.host}:{self.port})"

    def clean(self) -> None:
        for field in ("claude_tiers", "model_aliases"):
            value = getattr(self, field)
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) and v.strip()
                    for k, v in value.items()):
                raise ValidationError({field: "a JSON object of names to model ids"})
        scheme = self.upstream_proxy.split("://", 1)[0].lower()
        if self.upstream_proxy and scheme not in {"http", "https", "socks4", "socks5"}:
            raise ValidationError({"upstream_proxy": "http://, https://, socks4:// or socks5://"})

    @property
    def origins(self) -> list[str]:
        return split_list(self.cors_allowed_origins)


def hash_key(key: str) -> str:
    # Keys are long random strings, not passwords: one SHA-256 is enough to store them.
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_MARK + secrets.token_urlsafe(30)


class ClientKeyQuerySet(models.QuerySet["ClientKey"]):
    def usable(self) -> ClientKeyQuerySet:
        now = timezone.now()
        return self.filter(enabled=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))


class ClientKey(models.Model):
    """A key a client sends (Bearer or x-api-key). Only its hash is stored; the key itself is
    shown once, when it is made."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=PREFIX_LENGTH, db_index=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    enabled = models.BooleanField(default=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    allowed_models = models.TextField(
        blank=True, help_text="Model names this key may use, comma or newline separated; "
        "empty: all.")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ClientKeyQuerySet.as_manager()

    class Meta:
        ordering = ["instance", "name"]
        verbose_name = "client API key"

    def __str__(self) -> str:
        return f"{self.name or 'key'} ({self.prefix}…)"

    def set_key(self, key: str) -> None:
        self.prefix = key[:PREFIX_LENGTH]
        self.key_hash = hash_key(key)

    @classmethod
    def create(cls, instance: Instance, name: str = "", **fields: object) -> tuple[ClientKey, str]:
        """A new key: the row, and the key to show once."""
        key = new_key()
        row = cls(instance=instance, name=name, **fields)
        row.set_key(key)
        row.save()
        return row, key

    @property
    def models(self) -> list[str]:
        return split_list(self.allowed_models)

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()


class RateRule(models.Model):
    """Limits for one client key, for a whole instance, or for each client IP of an instance.
    Every limit left empty is not enforced."""

    class Scope(models.TextChoices):
        KEY = "key", "Per client key"
        INSTANCE = "instance", "Per instance (all clients together)"
        IP = "ip", "Per client IP"

    name = models.CharField(max_length=100, blank=True)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.KEY)
    instance = models.ForeignKey(
        Instance, on_delete=models.CASCADE, null=True, blank=True, related_name="rate_rules",
        help_text="The instance it applies to (scopes instance and IP); empty: every instance.")
    key = models.ForeignKey(
        ClientKey, on_delete=models.CASCADE, null=True, blank=True, related_name="rate_rules",
        help_text="Scope key: this key only; empty: every key, each on its own.")
    enabled = models.BooleanField(default=True)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    requests_per_hour = models.PositiveIntegerField(null=True, blank=True)
    requests_per_day = models.PositiveIntegerField(null=True, blank=True)
    concurrent_streams = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Input and output tokens, as the upstream counted them.")

    class Meta:
        ordering = ["scope", "id"]

    def __str__(self) -> str:
        return self.name or f"{self.get_scope_display()} #{self.pk}"

    def clean(self) -> None:
        if self.key_id is not None and self.scope != self.Scope.KEY:
            raise ValidationError({"key": "only a per-key rule names a key"})
        limits = (self.requests_per_minute, self.requests_per_hour, self.requests_per_day,
                  self.concurrent_streams, self.tokens_per_minute)
        if all(v is None for v in limits):
            raise ValidationError("set at least one limit")
