from django.contrib import admin
from django.urls import include, path, re_path

from proxy.api import api
from proxy.docs import redoc
from proxy.usage import usage
from proxy.views import not_found, root

urlpatterns = [
    path("admin/usage/", admin.site.admin_view(usage), name="usage"),  # before the admin
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("", root),
    path("redoc", redoc, name="redoc"),  # ReDoc (Swagger UI is /docs)
    path("", api.urls),
    re_path(r"^v1/", not_found),
]
