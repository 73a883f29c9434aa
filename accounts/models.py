"""Upstream accounts (whose keys we call providers with) and the model catalogue."""

from __future__ import annotations

import uuid

from django.core.validators import URLValidator
from django.db import models
from django.utils import timezone

from accounts.crypto import EncryptedTextField


def new_session_id() -> str:
    return f"session-{uuid.uuid4()}"


def new_conversation_id() -> str:
    return str(uuid.uuid4())


class Provider(models.TextChoices):
    IFLOW = "iflow", "iFlow"
    OPENAI = "openai", "OpenAI-compatible"


DEFAULT_BASE_URLS = {
    Provider.IFLOW: "https://apis.iflow.cn/v1",
    Provider.OPENAI: "https://api.openai.com/v1",
}


class Account(models.Model):
    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        COOLING = "cooling", "Cooling down"
        NEEDS_LOGIN = "needs_login", "Needs login"
        BLOCKED = "blocked", "Blocked"
        ERROR = "error", "Error"

    provider = models.CharField(max_length=16, choices=Provider.choices, default=Provider.IFLOW)
    label = models.CharField(max_length=100)
    base_url = models.CharField(
        max_length=300, validators=[URLValidator(schemes=["http", "https"])]
    )
    enabled = models.BooleanField(default=True)

    api_key = EncryptedTextField(blank=True)
    oauth_access_token = EncryptedTextField(blank=True)
    oauth_refresh_token = EncryptedTextField(blank=True)
    cookie = EncryptedTextField(blank=True, help_text="BXAuth cookie value (iFlow cookie login)")
    access_token_expires_at = models.DateTimeField(null=True, blank=True)
    api_key_expires_at = models.DateTimeField(null=True, blank=True)
    email = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=40, blank=True)
    api_key_name = models.CharField(
        max_length=100, blank=True, help_text="Name of the key on platform.iflow.cn (cookie login)"
    )

    # Refresh bookkeeping. `refreshing_until` is a lease: one refresher at a time, across
    # processes (a lost race kills a single-use refresh token).
    refreshing_until = models.DateTimeField(null=True, blank=True)
    last_refreshed_at = models.DateTimeField(null=True, blank=True)
    refresh_failures = models.PositiveIntegerField(default=0)
    next_refresh_attempt_at = models.DateTimeField(null=True, blank=True)

    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    cooldown_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    max_concurrency = models.PositiveIntegerField(
        default=1, help_text="Requests in flight at once on this account; 0 means no limit."
    )

    # iFlow singles out a fixed id pair as a fingerprint: keep one pair per account.
    session_id = models.CharField(max_length=64, default=new_session_id)
    conversation_id = models.CharField(max_length=64, default=new_conversation_id)

    # Where an imported account came from ("iflow-settings:/path", "env:IFLOW_API_KEY"),
    # so re-imports update it instead of adding duplicates.
    source = models.CharField(max_length=300, blank=True, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # Replicas importing the same source at once must end with one account.
            models.UniqueConstraint(fields=["source"], condition=~models.Q(source=""),
                                    name="account_unique_source"),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.get_provider_display()})"


class ModelInfo(models.Model):
    """One model clients may ask for, and what we know about it."""

    model_id = models.CharField("model id", max_length=120, unique=True)
    display_name = models.CharField(max_length=120, blank=True)
    provider = models.CharField(max_length=16, choices=Provider.choices, default=Provider.IFLOW)
    upstream_id = models.CharField(
        max_length=120, blank=True, help_text="Name sent upstream, if it differs from the id."
    )
    accounts = models.ManyToManyField(
        Account,
        blank=True,
        help_text="Accounts serving this model; none means any account of the provider.",
    )
    context_length = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    vision = models.BooleanField(default=False)
    aliases = models.JSONField(default=list, blank=True)
    owned_by = models.CharField(max_length=60, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["provider", "model_id"]
        verbose_name = "model"

    def __str__(self) -> str:
        return self.model_id


class OAuthLogin(models.Model):
    """A login started from the admin or the command line; its `state` is single-use."""

    state = models.CharField(max_length=100, unique=True)
    redirect_uri = models.CharField(max_length=500)
    account = models.ForeignKey(
        Account,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        help_text="The account to log in again; empty for a new account.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "OAuth login"

    def __str__(self) -> str:
        return f"login {self.state[:8]}… ({'used' if self.used_at else 'pending'})"
