"""The request log: one row per API request, written off the hot path (proxy/requestlog.py).
Bodies are stored only for instances that turn `log_bodies` on."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class RequestLog(models.Model):
    class Api(models.TextChoices):
        OPENAI = "openai", "OpenAI"
        ANTHROPIC = "anthropic", "Anthropic"
        RESPONSES = "responses", "OpenAI Responses"

    started_at = models.DateTimeField(_("started at"), db_index=True)
    instance = models.CharField(_("instance"), max_length=64, default="default")
    key_label = models.CharField(_("client key"), max_length=100, blank=True)
    account = models.ForeignKey(
        "accounts.Account", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="request_logs", verbose_name=_("account"),
    )
    model = models.CharField(_("model"), max_length=200, blank=True,
                             help_text=_("The model actually used"))
    requested_model = models.CharField(_("requested model"), max_length=200, blank=True)
    api = models.CharField(_("API"), max_length=16, choices=Api.choices)
    stream = models.BooleanField(_("stream"), default=False)
    status = models.PositiveSmallIntegerField(_("status"))
    latency_ms = models.PositiveIntegerField(_("latency (ms)"))
    ttft_ms = models.PositiveIntegerField(_("first token (ms)"), null=True, blank=True)
    tokens_in = models.PositiveIntegerField(_("tokens in"), null=True, blank=True)
    tokens_out = models.PositiveIntegerField(_("tokens out"), null=True, blank=True)
    tokens_cached = models.PositiveIntegerField(
        _("cached tokens"), null=True, blank=True,
        help_text=_("Of the tokens in, those the upstream read from its prompt cache"))
    cost = models.DecimalField(
        _("cost"), max_digits=20, decimal_places=10, null=True, blank=True,
        help_text=_("From the upstream's usage and the model's prices; empty: cost unknown"))
    cost_currency = models.CharField(_("currency"), max_length=3, blank=True)
    error = models.CharField(_("error"), max_length=500, blank=True)
    request_body = models.TextField(_("request body"), blank=True)
    response_body = models.TextField(_("response body"), blank=True)
    # The id the client was given (x-request-id, Anthropic's request-id, error bodies) and that
    # the server's log lines carry: a client quoting it finds this row.
    request_id = models.CharField(_("request id"), max_length=64, blank=True, db_index=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        verbose_name = _("request log entry")
        verbose_name_plural = _("request log entries")
        indexes = [models.Index(fields=["model", "started_at"])]

    def __str__(self) -> str:
        return f"{self.started_at:%Y-%m-%d %H:%M:%S} {self.api} {self.model} {self.status}"


class StoredResponse(models.Model):
    """A Responses API answer kept for `previous_response_id`, GET and input_items
    (proxy/responses_state.py). Visible only on its instance and to the client key that created
    it (none on an instance without keys). Holds the client's own items and our answer: never
    an upstream key."""

    id = models.CharField(_("id"), max_length=64, primary_key=True)
    instance = models.CharField(_("instance"), max_length=64, db_index=True)
    key = models.ForeignKey(
        "instances.ClientKey", null=True, blank=True, on_delete=models.CASCADE,
        related_name="+", verbose_name=_("client key"),
    )
    model = models.CharField(_("model"), max_length=200, blank=True)
    created_at = models.DateTimeField(_("created at"), db_index=True)
    previous_response_id = models.CharField(_("previous response"), max_length=64, blank=True)
    # The request's own input items (ids added) and instructions, and the response object.
    input_items = models.JSONField(_("input items"), default=list)
    instructions = models.TextField(_("instructions"), blank=True)
    response = models.JSONField(_("response"))

    class Meta:
        verbose_name = _("stored response")
        verbose_name_plural = _("stored responses")

    def __str__(self) -> str:
        return self.id
