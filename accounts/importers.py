"""Accounts that come from outside the admin: iflow-cli's settings file and the environment.

Each import is idempotent: the account is found again by its `source` and updated.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from django.db import IntegrityError, transaction
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from accounts.logins import ANTHROPIC_SETTINGS, LoginError, anthropic_settings, validate_account
from accounts.models import DEFAULT_BASE_URLS, Account, ModelInfo, Provider

log = logging.getLogger(__name__)


def _parse_expiry(value: object) -> datetime | None:
    if isinstance(value, int | float) and value > 0:
        return datetime.fromtimestamp(value / 1000 if value > 1e11 else value).astimezone()
    if isinstance(value, str) and value:
        return parse_datetime(value)
    return None


def _file_is_newer(account: Account, file_expiry: datetime | None) -> bool:
    """Whether the settings file holds fresher credentials than the account."""
    if account.last_refreshed_at is None:
        return True  # never refreshed here: the file is the only source
    if file_expiry is None or account.access_token_expires_at is None:
        return False
    return file_expiry > account.access_token_expires_at


def _upsert(source: str, defaults: dict) -> tuple[Account, bool]:
    try:
        return _upsert_once(source, defaults)
    except IntegrityError:  # another process created it a moment ago: update that one
        return _upsert_once(source, defaults)


def _upsert_once(source: str, defaults: dict) -> tuple[Account, bool]:
    with transaction.atomic():
        account = Account.objects.select_for_update().filter(source=source).first()
        created = account is None
        if created:
            account = Account(source=source)
        for name, value in defaults.items():
            setattr(account, name, value)
        account.save()
    return account, created


def import_iflow_settings(directory: Path) -> Account | None:
    """Import ~/.iflow/settings.json (and oauth_creds.json) as an iFlow account."""
    settings_path = directory / "settings.json"
    creds_path = directory / "oauth_creds.json"
    data: dict = {}
    for path in (creds_path, settings_path):  # settings.json wins where both have a field
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                log.warning("cannot read %s: %s", path, exc)
                continue
            if isinstance(loaded, dict):
                data.update(loaded)
    api_key = data.get("apiKey") or data.get("searchApiKey") or ""
    if not api_key:
        return None
    defaults = {
        "provider": Provider.IFLOW,
        "label": "iFlow (" + ("OAuth" if data.get("selectedAuthType") == "oauth-iflow" else "CLI")
        + " settings)",
        "base_url": data.get("baseUrl") or DEFAULT_BASE_URLS[Provider.IFLOW],
        "api_key": api_key,
    }
    access = data.get("oauth_access_token") or data.get("access_token")
    refresh = data.get("oauth_refresh_token") or data.get("refresh_token")
    if access:
        defaults["oauth_access_token"] = access
    if refresh:
        defaults["oauth_refresh_token"] = refresh
    expiry = _parse_expiry(data.get("oauth_expires_at") or data.get("expiry_date"))
    if expiry:
        defaults["access_token_expires_at"] = expiry
    key_expiry = _parse_expiry(data.get("api_key_expires_at"))
    if key_expiry:
        defaults["api_key_expires_at"] = key_expiry
    source = f"iflow-settings:{settings_path}"
    existing = Account.objects.filter(source=source).first()
    # A new baseUrl in the file: the stored secrets may not follow it (Account.save clears
    # them), so the file's own go with it.
    moved = existing is not None and existing.base_url != defaults["base_url"]
    if existing is not None and not moved and not _file_is_newer(existing, expiry):
        # Our refresh already replaced these single-use tokens (and the key fetched with
        # them): writing the file's older ones back would kill the account.
        for name in ("api_key", "oauth_access_token", "oauth_refresh_token",
                     "access_token_expires_at", "api_key_expires_at"):
            defaults.pop(name, None)
    account, created = _upsert(source, defaults)
    log.info("%s iFlow account from %s", "imported" if created else "updated", settings_path)
    return account


def import_environment(environ: dict[str, str] | None = None) -> list[Account]:
    """IFLOW_API_KEY / IFLOW_BASE_URL, and UPSTREAM_BASE_URL / UPSTREAM_API_KEY / UPSTREAM_MODELS
    / UPSTREAM_LABEL for any OpenAI-compatible provider, or an Anthropic-compatible one with
    UPSTREAM_PROVIDER=anthropic (containers configure themselves this way). A setting that
    cannot make a valid account raises LoginError (`serve` stops with its message)."""
    env = os.environ if environ is None else environ
    accounts = []
    if env.get("IFLOW_API_KEY"):
        account, _created = _upsert(
            "env:IFLOW_API_KEY",
            {
                "provider": Provider.IFLOW,
                "label": "iFlow (environment)",
                "base_url": env.get("IFLOW_BASE_URL") or DEFAULT_BASE_URLS[Provider.IFLOW],
                "api_key": env["IFLOW_API_KEY"],
            },
        )
        accounts.append(account)
    if env.get("UPSTREAM_BASE_URL"):
        account = _upstream_account(env)
        accounts.append(account)
        for name in [m.strip() for m in env.get("UPSTREAM_MODELS", "").split(",") if m.strip()]:
            info, _created = ModelInfo.objects.get_or_create(
                model_id=name, defaults={"provider": account.provider, "display_name": name}
            )
            info.accounts.add(account)
    return accounts


# How the environment names an Anthropic-compatible account's settings (addaccount's
# --auth-header, --beta-policy, --allow-betas, --anthropic-version).
ANTHROPIC_VARIABLES = {"auth_header": "UPSTREAM_AUTH_HEADER", "beta_policy": "UPSTREAM_BETA_POLICY",
                       "beta_allowlist": "UPSTREAM_ALLOW_BETAS",
                       "anthropic_version": "UPSTREAM_ANTHROPIC_VERSION"}


def _upstream_account(env: Mapping[str, str]) -> Account:
    """The UPSTREAM_* account, checked like `addaccount` checks its options. The environment
    is the whole description: a setting removed from it goes back to its default."""
    provider = (env.get("UPSTREAM_PROVIDER") or Provider.OPENAI).strip().lower()
    if provider not in (Provider.OPENAI, Provider.ANTHROPIC):
        raise LoginError(_("UPSTREAM_PROVIDER must be openai or anthropic, not %(value)r.")
                         % {"value": provider})
    given = {"auth_header": env.get("UPSTREAM_AUTH_HEADER"),
             "beta_policy": env.get("UPSTREAM_BETA_POLICY"),
             "beta_allowlist": env.get("UPSTREAM_ALLOW_BETAS"),
             "anthropic_version": env.get("UPSTREAM_ANTHROPIC_VERSION")}
    provider, base_url, chosen = anthropic_settings(
        provider, env["UPSTREAM_BASE_URL"].strip().rstrip("/"), None, given,
        ANTHROPIC_VARIABLES, "UPSTREAM_PROVIDER=anthropic")
    label = ("Anthropic-compatible (environment)" if provider == Provider.ANTHROPIC
             else "OpenAI-compatible (environment)")
    defaults = {
        **{name: Account._meta.get_field(name).get_default() for name in ANTHROPIC_SETTINGS},
        **chosen,
        "provider": provider,
        "label": (env.get("UPSTREAM_LABEL") or "").strip() or label,
        "base_url": base_url,
        "api_key": (env.get("UPSTREAM_API_KEY") or "").strip(),
        "max_concurrency": 0,
    }
    validate_account(Account(**defaults))
    account, _created = _upsert("env:UPSTREAM_BASE_URL", defaults)
    return account
