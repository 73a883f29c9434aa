from django.contrib import admin
from django.urls import include, path, re_path

from iflow2api_site.favicon import favicon
from instances.connect import connect_page
from instances.preferences import save_theme, set_language
from instances.views import status_page
from proxy.api import api
from proxy.docs import redoc
from proxy.docs_pages import redoc_script
from proxy.metrics import metrics_view
from proxy.usage import usage
from proxy.views import not_found, root

handler400 = "iflow2api_site.hosts.bad_request"  # says what to do about a refused Host

urlpatterns = [
    path("admin/usage/", admin.site.admin_view(usage), name="usage"),  # before the admin
    path("admin/status/", admin.site.admin_view(status_page), name="status"),  # before too
    path("admin/connect/", admin.site.admin_view(connect_page), name="connect"),  # and this
    path("admin/theme/", save_theme, name="admin_theme"),  # the user's theme, remembered
    path("admin/", admin.site.urls),
    # The admin's language switcher: Django's set_language, also remembering the choice.
    path("i18n/setlang/", set_language, name="set_language"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("accounts/", include("accounts.urls")),
    path("", root),
    path("redoc", redoc, name="redoc"),  # ReDoc (Swagger UI is /docs)
    path("docs-assets/redoc.standalone.js", redoc_script, name="redoc_script"),
    path("favicon.ico", favicon, name="favicon"),
    path("metrics", metrics_view, name="metrics"),  # Prometheus; 404 unless enabled
    path("", api.urls),
    re_path(r"^v1/", not_found),
]
