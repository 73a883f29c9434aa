"""Instances (one API listener each), the client keys that may call them, and rate rules."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

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
        STOPPED = "stopped", _("Stopped")
        RUNNING = "running", _("Running")
        ERROR = "error", _("Error")

    name = models.SlugField(_("name"), max_length=64, unique=True)
    host = models.CharField(_("host"), max_length=255, default="127.0.0.1",
                            help_text=_("127.0.0.1 serves this computer only; 0.0.0.0 serves the "
                                        "network (needs a client key)."))
    port = models.PositiveIntegerField(
        _("port"), unique=True, validators=[MinValueValidator(1), MaxValueValidator(65535)])
    enabled = models.BooleanField(_("enabled"), default=True)

    preserve_reasoning_content = models.BooleanField(
        null=True, blank=True, verbose_name=_("preserve reasoning_content"),
        help_text=_("OpenAI chat: keep the reasoning as its own field (yes), merge it into the "
                    "content (no), or follow PRESERVE_REASONING_CONTENT (unknown)."))
    default_model = models.CharField(
        _("default model"), max_length=200, blank=True,
        help_text=_("Model for unknown names from Anthropic clients; empty: DEFAULT_MODEL."))
    claude_tiers = models.JSONField(
        default=dict, blank=True, verbose_name=_("claude-* tier map"),
        help_text=_('e.g. {"opus": "glm-5", "sonnet": "glm-5", "haiku": "qwen3-coder-plus"}; '
                    "missing tiers follow CLAUDE_*_MODEL."))
    model_aliases = models.JSONField(
        _("model aliases"), default=dict, blank=True,
        help_text=_('Extra model names and what they stand for, e.g. {"gpt-4o": "glm-5"}.'))
    accounts = models.ManyToManyField(
        "accounts.Account", blank=True, related_name="instances", verbose_name=_("accounts"),
        help_text=_("Upstream accounts this instance may use; none selected: all of them."))
    vision_model = models.CharField(
        _("vision model"), max_length=200, blank=True,
        help_text=_("Where requests with images go when their model cannot see; empty: "
                    "VISION_MODEL."))
    upstream_proxy = models.CharField(
        _("upstream proxy"), max_length=300, blank=True,
        help_text=_("http://host:port or socks5://host:port for calls to the upstream; empty: "
                    "UPSTREAM_PROXY."))
    cors_allowed_origins = models.TextField(
        blank=True, verbose_name=_("CORS allowed origins"),
        help_text=_("Browser origins that may call this API, comma or newline separated; * for "
                    "any (without credentials). Empty: CORS_ALLOWED_ORIGINS; if that is unset "
                    "too, only pages on this machine (localhost) when the instance has no "
                    "client key, any origin when it has one."))
    log_bodies = models.BooleanField(
        _("log bodies"), default=False,
        help_text=_("Store request and response bodies in the request log."))

    # Written by the server that runs the instance.
    state = models.CharField(_("state"), max_length=16, choices=State.choices,
                             default=State.STOPPED, editable=False)
    state_message = models.CharField(_("state message"), max_length=300, blank=True,
                                     editable=False)
    state_changed_at = models.DateTimeField(_("state changed at"), null=True, blank=True,
                                            editable=False)
    # host:port as bound, while running: --host/--port or IFLOW2API_HOST/PORT may differ
    # from the row's own host and port.
    listening_on = models.CharField(_("listening on"), max_length=300, blank=True,
                                    editable=False)

    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["port"]
        verbose_name = _("instance")
        verbose_name_plural = _("instances")

    def __str__(self) -> str:
        return f"{self.name} ({self.host}:{self.port})"

    def clean(self) -> None:
        for field in ("claude_tiers", "model_aliases"):
            value = getattr(self, field)
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) and v.strip()
                    for k, v in value.items()):
                raise ValidationError({field: _("a JSON object of names to model ids")})
        scheme = self.upstream_proxy.split("://", 1)[0].lower()
        if self.upstream_proxy and scheme not in {"http", "https", "socks4", "socks5"}:
            raise ValidationError({"upstream_proxy": _("http://, https://, socks4:// or "
                                                       "socks5://")})

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

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="keys",
                                 verbose_name=_("instance"))
    name = models.CharField(_("name"), max_length=100, blank=True)
    prefix = models.CharField(_("prefix"), max_length=PREFIX_LENGTH, db_index=True,
                              editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    enabled = models.BooleanField(_("enabled"), default=True)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    allowed_models = models.TextField(
        _("allowed models"), blank=True,
        help_text=_("Model names this key may use, comma or newline separated; empty: all."))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    objects = ClientKeyQuerySet.as_manager()

    class Meta:
        ordering = ["instance", "name"]
        verbose_name = _("client API key")
        verbose_name_plural = _("client API keys")

    def __str__(self) -> str:
        return f"{self.name or _('key')} ({self.prefix}…)"

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
        KEY = "key", _("Per client key")
        INSTANCE = "instance", _("Per instance (all clients together)")
        IP = "ip", _("Per client IP")

    name = models.CharField(_("name"), max_length=100, blank=True)
    scope = models.CharField(_("scope"), max_length=16, choices=Scope.choices,
                             default=Scope.KEY)
    instance = models.ForeignKey(
        Instance, on_delete=models.CASCADE, null=True, blank=True, related_name="rate_rules",
        verbose_name=_("instance"),
        help_text=_("The instance it applies to (scopes instance and IP); empty: every "
                    "instance."))
    key = models.ForeignKey(
        ClientKey, on_delete=models.CASCADE, null=True, blank=True, related_name="rate_rules",
        verbose_name=_("key"),
        help_text=_("Scope key: this key only; empty: every key, each on its own."))
    enabled = models.BooleanField(_("enabled"), default=True)
    requests_per_minute = models.PositiveIntegerField(_("requests per minute"), null=True,
                                                      blank=True)
    requests_per_hour = models.PositiveIntegerField(_("requests per hour"), null=True,
                                                    blank=True)
    requests_per_day = models.PositiveIntegerField(_("requests per day"), null=True, blank=True)
    concurrent_streams = models.PositiveIntegerField(_("concurrent streams"), null=True,
                                                     blank=True)
    tokens_per_minute = models.PositiveIntegerField(
        _("tokens per minute"), null=True, blank=True,
        help_text=_("Input and output tokens, as the upstream counted them."))

    class Meta:
        ordering = ["scope", "id"]
        verbose_name = _("rate rule")
        verbose_name_plural = _("rate rules")

    def __str__(self) -> str:
        return self.name or f"{self.get_scope_display()} #{self.pk}"

    def clean(self) -> None:
        if self.key_id is not None and self.scope != self.Scope.KEY:
            raise ValidationError({"key": _("only a per-key rule names a key")})
        limits = (self.requests_per_minute, self.requests_per_hour, self.requests_per_day,
                  self.concurrent_streams, self.tokens_per_minute)
        if all(v is None for v in limits):
            raise ValidationError(_("set at least one limit"))


class AdminPreference(models.Model):
    """An admin user's theme and language, so that they follow the user to another browser
    (instances/preferences.py saves them; the admin header applies them)."""

    class Theme(models.TextChoices):
        AUTO = "auto", _("Follow the system")
        LIGHT = "light", _("Light")
        DARK = "dark", _("Dark")

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="admin_preference", verbose_name=_("user"))
    theme = models.CharField(_("theme"), max_length=8, choices=Theme.choices, blank=True)
    language = models.CharField(_("language"), max_length=16, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("admin preference")
        verbose_name_plural = _("admin preferences")

    def __str__(self) -> str:
        return str(self.user)


class Budget(models.Model):
    """A spend limit (and optionally a token limit) for one client key or one whole instance,
    per calendar day, week (from Monday) or month in TIME_ZONE. Checked before a request is
    sent, settled from its usage after (proxy/budgets.py; docs/costs.md)."""

    class Period(models.TextChoices):
        DAY = "day", _("Per day")
        WEEK = "week", _("Per week (from Monday)")
        MONTH = "month", _("Per month")

    instance = models.ForeignKey(
        Instance, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets",
        verbose_name=_("instance"), help_text=_("The whole instance, all keys together."))
    key = models.ForeignKey(
        ClientKey, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets",
        verbose_name=_("key"), help_text=_("This client key alone."))
    period = models.CharField(_("period"), max_length=8, choices=Period.choices,
                              default=Period.MONTH)
    spend_limit = models.DecimalField(
        _("spend limit"), max_digits=16, decimal_places=4, null=True, blank=True,
        help_text=_("In the currency below; requests of models priced in another currency, "
                    "or whose cost is unknown, do not count."))
    currency = models.CharField(_("currency"), max_length=3, default="USD")
    token_limit = models.PositiveBigIntegerField(
        _("token limit"), null=True, blank=True,
        help_text=_("Input and output tokens, as the upstream counted them."))
    warn_percent = models.PositiveSmallIntegerField(
        _("warn at (%)"), default=80, validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text=_("A warning on the live status page and in the log from this share on."))
    enabled = models.BooleanField(_("enabled"), default=True)

    class Meta:
        ordering = ["id"]
        verbose_name = _("budget")
        verbose_name_plural = _("budgets")

    def __str__(self) -> str:
        owner = self.key or self.instance
        return f"{owner} · {self.get_period_display()}"

    def clean(self) -> None:
        if (self.key_id is None) == (self.instance_id is None):
            raise ValidationError(_("a budget is for one client key or for one instance"))
        if self.spend_limit is None and self.token_limit is None:
            raise ValidationError(_("set a spend limit, a token limit or both"))
        self.currency = (self.currency or "").strip().upper()
        if len(self.currency) != 3 or not self.currency.isalpha():
            raise ValidationError({"currency": _("three letters, e.g. USD or CNY")})
