"""The admin site: its index ordered by what a user needs first (upstream accounts, then
instances and keys, then the request log, then the rest), and django-axes under a translated
name. Installed in INSTALLED_APPS through the two AppConfigs below."""

from __future__ import annotations

from typing import Any

from axes.apps import AppConfig as AxesAppConfig
from django.contrib.admin import AdminSite
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext_lazy as _

# Apps in this order (any other app after them, by name); within an app, models in this order.
APP_ORDER = ("accounts", "instances", "proxy", "auth", "axes", "django_celery_beat")
MODEL_ORDER = {
    "accounts": ("Account", "ModelInfo", "OAuthLogin"),
    "instances": ("Instance", "ClientKey", "RateRule"),
}
FIRST_APPS = ("accounts", "instances")  # above the Monitoring box on the index


def _rank(names: tuple[str, ...], name: str) -> int:
    return names.index(name) if name in names else len(names)


class GatewayAdminSite(AdminSite):
    index_template = "admin/gateway_index.html"

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[Any]:
        apps = super().get_app_list(request, app_label)
        apps.sort(key=lambda app: (_rank(APP_ORDER, app["app_label"]), str(app["name"])))
        for app in apps:
            order = MODEL_ORDER.get(app["app_label"], ())
            app["models"].sort(key=lambda m: (_rank(order, m["object_name"]), str(m["name"])))
        return apps

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None
              ) -> HttpResponse:
        apps = self.get_app_list(request)
        context = {
            "first_apps": [a for a in apps if a["app_label"] in FIRST_APPS],
            "other_apps": [a for a in apps if a["app_label"] not in FIRST_APPS],
            **(extra_context or {}),
        }
        return super().index(request, context)


class GatewayAdminConfig(AdminConfig):
    default_site = "iflow2api_site.admin_site.GatewayAdminSite"


class AxesConfig(AxesAppConfig):
    """django-axes (admin login lockout) with a name that is translated."""

    verbose_name = _("Login lockout (Axes)")


# django-axes ships no Chinese catalogue: its admin's words, translated in ours (Django looks a
# message up in every catalogue). Listed here so that makemessages keeps them.
AXES_WORDS = (
    _("access attempt"), _("access attempts"), _("access failure"), _("access failures"),
    _("access log"), _("access logs"), _("access attempt expiration"),
    _("access attempt expirations"), _("User Agent"), _("IP Address"), _("Username"),
    _("HTTP Accept"), _("Path"), _("Attempt Time"), _("Access lock out"), _("GET Data"),
    _("POST Data"), _("Failed Logins"), _("Access Attempt"), _("Expires At"),
    _("The time when access attempt expires and is no longer valid."), _("Logout Time"),
    _("Session key hash (sha256)"), _("Locked Out"), _("Form Data"), _("Meta Data"),
    _("Clean up expired attempts"), _("Not set"), _("Attempt Remaining"),
)
