"""The pages around the API: root, docs and the admin's assets, served by `iflow2api serve`."""

from __future__ import annotations

import httpx


def test_root_answers_get_and_head(gateway):
    assert httpx.head(gateway.url + "/").status_code == 200
    assert httpx.get(gateway.url + "/").json()["openai_base"] == "/v1"


def test_swagger_docs_and_their_bundled_assets(gateway):
    page = httpx.get(gateway.url + "/docs")
    assert page.status_code == 200
    assert "/static/ninja/swagger-ui-bundle.js" in page.text
    for asset in ("/static/ninja/swagger-ui-bundle.js", "/static/ninja/swagger-ui.css"):
        assert httpx.get(gateway.url + asset).status_code == 200
    schema = httpx.get(gateway.url + "/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/messages", "/v1/models"} <= set(schema["paths"])


def test_admin_assets_are_served(gateway):
    login = httpx.get(gateway.url + "/admin/login/")
    assert login.status_code == 200
    assert httpx.get(gateway.url + "/static/admin/css/base.css").status_code == 200
