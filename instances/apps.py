from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class InstancesConfig(AppConfig):
    name = "instances"
    verbose_name = _("Instances")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from instances import preferences  # noqa: F401  (applies a saved language at login)
