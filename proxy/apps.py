from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ProxyConfig(AppConfig):
    name = "proxy"
    verbose_name = _("Proxy")
    default_auto_field = "django.db.models.BigAutoField"
