"""Upstream accounts (whose keys we call providers with) and the model catalogue."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.validators import URLValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.crypto import EncryptedTextField


def new_session_id() -> str:
    return f"session-{uuid.uuid4()}"


def new_conversation_id() -> str:
    return str(uuid.uuid4())


class Provider(models.TextChoices):
    IFLOW = "iflow", "iFlow"
    OPENAI = "openai", _("OpenAI-compatible")
    ANTHROPIC = "anthropic", _("Anthropic-compatible")


DEFAULT_BASE_URLS = {
    Provider.IFLOW: "https://apis.iflow.cn/v1",
    Provider.OPENAI: "https://api.openai.com/v1",
    Provider.ANTHROPIC: "https://api.anthropic.com",
}


class AuthHeader(models.TextChoices):
    """How an Anthropic-compatible account sends its key: vendors differ."""

    X_API_KEY = "x-api-key", _("x-api-key header")
    BEARER = "bearer", _("Authorization: Bearer")


class BetaPolicy(models.TextChoices):
    """What happens to a client's anthropic-beta header on an Anthropic-compatible account."""

    FORWARD = "forward", _("Forward all betas")
    DROP = "drop", _("Drop all betas")
    ALLOW = "allow", _("Forward only the allowed betas")

# The secrets an account holds, and the fields that decide where they are sent. Moving an
# account (new base URL or provider) keeps only the secrets given again in the same change:
# otherwise anyone allowed to edit the URL could have the stored key sent to their own server.
SECRET_FIELDS = ("api_key", "oauth_access_token", "oauth_refresh_token", "cookie")
DESTINATION_FIELDS = ("provider", "base_url")


def moved_secrets_error() -> str:
    return str(_("The base URL or provider changed without its secrets: enter the API key "
                 "again (or log in again)."))


def _holds(names: list[str]) -> models.Q:
    """Rows where any of these secrets is set."""
    held = models.Q()
    for name in names:
        held |= ~models.Q(**{name: ""})
    return held


class AccountQuerySet(models.QuerySet["Account"]):
    def update(self, **kwargs: object) -> int:
        """An update that moves accounts clears, on the rows it moves, the secrets it does not
        set itself (as Account.save does)."""
        moving = [name for name in DESTINATION_FIELDS if name in kwargs]
        stale = [name for name in SECRET_FIELDS if name not in kwargs]
        if moving and stale:
            moved = models.Q()
            for name in moving:
                moved |= ~models.Q(**{name: kwargs[name]})
            targets = self.filter(moved)
            if "api_key" in stale:
                targets.filter(_holds(stale)).update(state=Account.State.NEEDS_LOGIN,
                                                     last_error=moved_secrets_error())
            targets.update(**{name: "" for name in stale})
        return super().update(**kwargs)


class Account(models.Model):
    class State(models.TextChoices):
        ACTIVE = "active", _("Active")
        COOLING = "cooling", _("Cooling down")
        NEEDS_LOGIN = "needs_login", _("Needs login")
        BLOCKED = "blocked", _("Blocked")
        ERROR = "error", _("Error")

    provider = models.CharField(_("provider"), max_length=16, choices=Provider.choices,
                                default=Provider.IFLOW)
    label = models.CharField(_("label"), max_length=100)
    base_url = models.CharField(
        _("base URL"), max_length=300, validators=[URLValidator(schemes=["http", "https"])]
    )
    enabled = models.BooleanField(_("enabled"), default=True)

    api_key = EncryptedTextField(_("API key"), blank=True)
    oauth_access_token = EncryptedTextField(_("OAuth access token"), blank=True)
    oauth_refresh_token = EncryptedTextField(_("OAuth refresh token"), blank=True)
    cookie = EncryptedTextField(_("cookie"), blank=True,
                                help_text=_("BXAuth cookie value (iFlow cookie login)"))
    access_token_expires_at = models.DateTimeField(_("access token expires at"), null=True,
                                                   blank=True)
    api_key_expires_at = models.DateTimeField(_("API key expires at"), null=True, blank=True)
    email = models.CharField(_("email"), max_length=200, blank=True)
    phone = models.CharField(_("phone"), max_length=40, blank=True)
    api_key_name = models.CharField(
        _("API key name"), max_length=100, blank=True,
        help_text=_("Name of the key on platform.iflow.cn (cookie login)")
    )

    # Refresh bookkeeping. `refreshing_until` is a lease: one refresher at a time, across
    # processes (a lost race kills a single-use refresh token).
    refreshing_until = models.DateTimeField(_("refreshing until"), null=True, blank=True)
    last_refreshed_at = models.DateTimeField(_("last refreshed at"), null=True, blank=True)
    refresh_failures = models.PositiveIntegerField(_("refresh failures"), default=0)
    next_refresh_attempt_at = models.DateTimeField(_("next refresh attempt at"), null=True,
                                                   blank=True)

    state = models.CharField(_("state"), max_length=16, choices=State.choices,
                             default=State.ACTIVE)
    cooldown_until = models.DateTimeField(_("cooldown until"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    max_concurrency = models.PositiveIntegerField(
        _("max concurrency"), default=1,
        help_text=_("Requests in flight at once on this account; 0 means no limit.")
    )

    # Anthropic-compatible accounts only (docs/anthropic-upstreams.md).
    auth_header = models.CharField(
        _("key sent as"), max_length=16, choices=AuthHeader.choices,
        default=AuthHeader.X_API_KEY,
        help_text=_("Anthropic-compatible accounts: the header the vendor reads the key from."))
    anthropic_version = models.CharField(
        _("anthropic-version"), max_length=32, default="2023-06-01", blank=True,
        help_text=_("Anthropic-compatible accounts: sent when the client sends none."))
    beta_policy = models.CharField(
        _("anthropic-beta policy"), max_length=16, choices=BetaPolicy.choices,
        default=BetaPolicy.DROP,
        help_text=_("Anthropic-compatible accounts: vendors reject betas they do not know."))
    beta_allowlist = models.CharField(
        _("allowed betas"), max_length=500, blank=True,
        help_text=_("Comma-separated anthropic-beta values forwarded under the allow-list "
                    "policy."))

    # iFlow singles out a fixed id pair as a fingerprint: keep one pair per account.
    session_id = models.CharField(_("session id"), max_length=64, default=new_session_id)
    conversation_id = models.CharField(_("conversation id"), max_length=64,
                                       default=new_conversation_id)

    # Where an imported account came from ("iflow-settings:/path", "env:IFLOW_API_KEY"),
    # so re-imports update it instead of adding duplicates.
    source = models.CharField(_("source"), max_length=300, blank=True, db_index=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = AccountQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        verbose_name = _("account")
        verbose_name_plural = _("accounts")
        constraints = [
            # Replicas importing the same source at once must end with one account.
            models.UniqueConstraint(fields=["source"], condition=~models.Q(source=""),
                                    name="account_unique_source"),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.get_provider_display()})"

    # --- the secrets follow their destination ------------------------------------------------

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._secrets_given: set[str] = set()  # secrets assigned since loaded or last saved

    def __setattr__(self, name: str, value: Any) -> None:
        if name in SECRET_FIELDS and "_secrets_given" in self.__dict__:
            self._secrets_given.add(name)
        super().__setattr__(name, value)

    def refresh_from_db(self, *args: Any, **kwargs: Any) -> None:
        super().refresh_from_db(*args, **kwargs)  # values from the row are not "given"
        fields = kwargs.get("fields") or (args[1] if len(args) > 1 else None)
        self._secrets_given.difference_update(fields or SECRET_FIELDS)

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:  # also a row built by hand with its pk, never loaded
            update_fields = kwargs.get("update_fields")
            dropped = self._drop_secrets_if_moved(update_fields)
            if dropped and update_fields is not None:
                kwargs["update_fields"] = {*update_fields, *dropped}
        super().save(*args, **kwargs)
        self._secrets_given = set()

    def _drop_secrets_if_moved(self, update_fields: Any) -> list[str]:
        """When this save sends the account somewhere else, empty the secrets not given again
        (fail closed); the names of the fields that changed."""
        saved = [name for name in DESTINATION_FIELDS
                 if update_fields is None or name in update_fields]
        if not saved:
            return []
        row = type(self)._base_manager.filter(pk=self.pk)
        stored = row.values(*saved).first()
        if stored is None or all(stored[name] == getattr(self, name) for name in saved):
            return []
        stale = [name for name in SECRET_FIELDS if name not in self._secrets_given]
        if not stale:
            return []
        held = any(getattr(self, name) for name in stale) or row.filter(_holds(stale)).exists()
        for name in stale:
            self.__dict__[name] = ""
        if held and not self.api_key:  # left without a key: unusable until one is entered
            self.state = self.State.NEEDS_LOGIN
            self.last_error = moved_secrets_error()
            return [*stale, "state", "last_error"]
        return stale


class ModelInfo(models.Model):
    """One model clients may ask for, and what we know about it."""

    model_id = models.CharField(_("model id"), max_length=120, unique=True)
    display_name = models.CharField(_("display name"), max_length=120, blank=True)
    provider = models.CharField(_("provider"), max_length=16, choices=Provider.choices,
                                default=Provider.IFLOW)
    upstream_id = models.CharField(
        _("upstream id"), max_length=120, blank=True,
        help_text=_("Name sent upstream, if it differs from the id.")
    )
    accounts = models.ManyToManyField(
        Account,
        blank=True,
        verbose_name=_("accounts"),
        help_text=_("Accounts serving this model; none means any account of the provider."),
    )
    context_length = models.PositiveIntegerField(_("context length"), null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(_("max output tokens"), null=True,
                                                    blank=True)
    vision = models.BooleanField(_("vision"), default=False)
    aliases = models.JSONField(_("aliases"), default=list, blank=True)
    owned_by = models.CharField(_("owned by"), max_length=60, blank=True)
    enabled = models.BooleanField(_("enabled"), default=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    # Prices per million tokens, as the vendor bills them (docs/costs.md). None is invented:
    # without an input and an output price the model's requests show "cost unknown".
    price_input = models.DecimalField(
        _("input price"), max_digits=12, decimal_places=6, null=True, blank=True,
        help_text=_("Per million input tokens (not read from the cache)."))
    price_cached_input = models.DecimalField(
        _("cached input price"), max_digits=12, decimal_places=6, null=True, blank=True,
        help_text=_("Per million input tokens read from the prompt cache; empty: the input "
                    "price."))
    price_cache_write = models.DecimalField(
        _("cache write price"), max_digits=12, decimal_places=6, null=True, blank=True,
        help_text=_("Per million input tokens written to the prompt cache (Anthropic-style "
                    "caches); empty: the input price."))
    price_output = models.DecimalField(
        _("output price"), max_digits=12, decimal_places=6, null=True, blank=True,
        help_text=_("Per million output tokens (reasoning included)."))
    price_currency = models.CharField(
        _("currency"), max_length=3, default="USD",
        help_text=_("ISO 4217 code of the prices, e.g. USD or CNY."))

    class Meta:
        ordering = ["provider", "model_id"]
        verbose_name = _("model")
        verbose_name_plural = _("models")

    def __str__(self) -> str:
        return self.model_id


class OAuthLogin(models.Model):
    """A login started from the admin or the command line; its `state` is single-use."""

    state = models.CharField(_("state"), max_length=100, unique=True)
    redirect_uri = models.CharField(_("redirect URI"), max_length=500)
    account = models.ForeignKey(
        Account,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        verbose_name=_("account"),
        help_text=_("The account to log in again; empty for a new account."),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    used_at = models.DateTimeField(_("used at"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("OAuth login")
        verbose_name_plural = _("OAuth logins")

    def __str__(self) -> str:
        status = _("used") if self.used_at else _("pending")
        return _("login %(state)s… (%(status)s)") % {"state": self.state[:8], "status": status}
