from django.contrib import admin
from django.urls import path, re_path

from proxy.api import api
from proxy.views import not_found, root

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", root),
    path("", api.urls),
    re_path(r"^v1/", not_found),
]
