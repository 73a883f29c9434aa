"""`{% admin_preferences as prefs %}`: what the admin header needs to save and apply a staff
user's theme and language (instances/preferences.py)."""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings
from django.urls import reverse
from django.utils.translation import get_language

from instances.preferences import APPLY_LANGUAGE, preference_for

register = template.Library()


@register.simple_tag(takes_context=True)
def admin_preferences(context: Any) -> dict[str, str]:
    request = context.get("request")
    user = getattr(request, "user", None)
    if not getattr(user, "is_authenticated", False) or not user.is_staff:
        return {"theme": "", "language": "", "save_url": "", "cookie": ""}
    preference = preference_for(user)
    session = getattr(request, "session", None)
    # Just logged in: the saved language, unless this page is in it already.
    language = session.pop(APPLY_LANGUAGE, "") if session is not None else ""
    return {
        "theme": preference.theme if preference else "",
        "language": language if language and language != get_language() else "",
        "save_url": reverse("admin_theme"),
        "cookie": settings.LANGUAGE_COOKIE_NAME,
    }
