"""Upstream accounts (whose keys we call providers with) and the model catalogue."""

from __future__ import annotations

import uuid

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


DEFAULT_BASE_URLS = {
    Provider.IFLOW: "https://apis.iflow.cn/v1",
    Provider.OPENAI: "https://api.openai.com/v1",
}


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

    # iFlow singles out a fixed id pair as a fingerprint: keep one pair per account.
    session_id = models.CharField(_("session id"), max_length=64, default=new_session_id)
    conversation_id = models.CharField(_("conversation id"), max_length=64,
                                       default=new_conversation_id)

    # Where an imported account came from ("iflow-settings:/path", "env:IFLOW_API_KEY"),
    # so re-imports update it instead of adding duplicates.
    source = models.CharField(_("source"), max_length=300, blank=True, db_index=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

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
