"""The request log: one row per API request, written off the hot path (proxy/requestlog.py).
Bodies are stored only for instances that turn `log_bodies` on."""

from __future__ import annotations

from django.db import models


class RequestLog(models.Model):
    class Api(models.TextChoices):
        OPENAI = "openai", "OpenAI"
        ANTHROPIC = "anthropic", "Anthropic"

    started_at = models.DateTimeField(db_index=True)
    instance = models.CharField(max_length=64, default="default")
    key_label = models.CharField("client key", max_length=100, blank=True)
    account = models.ForeignKey(
        "accounts.Account", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="request_logs",
    )
    model = models.CharField(max_length=200, blank=True, help_text="The model actually used")
    requested_model = models.CharField(max_length=200, blank=True)
    api = models.CharField(max_length=16, choices=Api.choices)
    stream = models.BooleanField(default=False)
    status = models.PositiveSmallIntegerField()
    latency_ms = models.PositiveIntegerField("latency (ms)")
    ttft_ms = models.PositiveIntegerField("first token (ms)", null=True, blank=True)
    tokens_in = models.PositiveIntegerField(null=True, blank=True)
    tokens_out = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    request_body = models.TextField(blank=True)
    response_body = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        verbose_name = "request"
        verbose_name_plural = "request log"
        indexes = [models.Index(fields=["model", "started_at"])]

    def __str__(self) -> str:
        return f"{self.started_at:%Y-%m-%d %H:%M:%S} {self.api} {self.model} {self.status}"
