"""An admin user's theme and language, remembered on the server so that they follow the user
to another browser.

- Theme: Django admin's toggle keeps it in the browser (localStorage "theme");
  instances/static/instances/preferences.js posts every change to `save_theme`, and the admin
  header (iflow2api_site/templates/admin/base_site.html) writes the saved value back into
  localStorage before the admin's theme.js reads it.
- Language: the header's switcher posts to `set_language` (Django's, which sets the language
  cookie), and the choice is saved here too; at the next login it is applied again.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import check_for_language
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from django.views.i18n import set_language as django_set_language

from instances.models import AdminPreference

APPLY_LANGUAGE = "iflow2api_apply_language"  # session key: the saved language, once
THEMES = set(AdminPreference.Theme.values)


def preference_for(user: Any) -> AdminPreference | None:
    if not getattr(user, "is_authenticated", False) or not user.is_staff:
        return None
    return AdminPreference.objects.filter(user=user).first()


def _save(user: Any, **fields: str) -> None:
    AdminPreference.objects.update_or_create(user=user, defaults=fields)


@require_POST
@staff_member_required
def save_theme(request: HttpRequest) -> HttpResponse:
    """The admin's theme toggle changed: remember the new value for this user."""
    theme = request.POST.get("theme", "")
    if theme not in THEMES:
        return JsonResponse({"error": _("The theme must be auto, light or dark.")}, status=400)
    _save(request.user, theme=theme)
    return JsonResponse({"theme": theme})


def set_language(request: HttpRequest) -> HttpResponse:
    """Django's set_language (the cookie and the redirect), and for staff the saved choice."""
    response = django_set_language(request)
    language = request.POST.get("language", "") if request.method == "POST" else ""
    user = request.user
    if (language and check_for_language(language)
            and language in dict(settings.LANGUAGES)
            and getattr(user, "is_authenticated", False) and user.is_staff):
        _save(user, language=language)
    return response


@receiver(user_logged_in, dispatch_uid="instances.preferences.apply_language")
def _remember_language_at_login(sender: Any, request: HttpRequest | None, user: Any,
                                **kwargs: Any) -> None:
    # The login's own response cannot set the language cookie; the next admin page does
    # (templatetags/admin_preferences.py), once.
    if request is None or not hasattr(request, "session"):
        return
    preference = preference_for(user)
    if preference is not None and preference.language:
        request.session[APPLY_LANGUAGE] = preference.language
