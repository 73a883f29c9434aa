from django.contrib import admin
from django.urls import include, path, re_path

from instances.views import status_page
from proxy.api import api
from proxy.docs import redoc
from proxy.metrics import metrics_view
from proxy.usage import usage
from proxy.views import not_found, root

urlpatterns = [
    path("admin/usage/", admin.site.admin_view(usage), name="usage"),  # before the admin
    path("admin/status/", admin.site.admin_view(status_page), name="status"),  # before too
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("", root),
    path("redoc", redoc, name="redoc"),  # ReDoc (Swagger UI is /docs)
    path("metrics", metrics_view, name="metrics"),  # Prometheus; 404 unless enabled
    path("", api.urls),
    re_path(r"^v1/", not_found),
]
