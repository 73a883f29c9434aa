from django.urls import path

from accounts import guided_views, views

app_name = "accounts"

urlpatterns = [
    path("oauth/start/", views.oauth_start, name="oauth_start"),
    path("oauth/callback/", views.oauth_callback, name="oauth_callback"),
    path("oauth/paste/", views.oauth_paste, name="oauth_paste"),
    path("cookie/", views.cookie_login, name="cookie_login"),
    path("add/", guided_views.add_upstream, name="add_upstream"),
    path("add/<int:pk>/models/", guided_views.choose_models, name="add_upstream_models"),
]
