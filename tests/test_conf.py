"""iflow2api_lib/conf.py: settings read once and kept, and forgotten when a setting changes."""

from __future__ import annotations

from django.conf import settings as django_settings
from django.test import override_settings

from iflow2api_lib import conf


def test_a_setting_is_kept_until_a_setting_changes(settings):
    settings.BEHIND_PROXY = False
    assert conf.setting("BEHIND_PROXY") is False
    settings.BEHIND_PROXY = True  # pytest-django sends setting_changed
    assert conf.setting("BEHIND_PROXY") is True
    with override_settings(METRICS_ENABLED=True):
        assert conf.setting("METRICS_ENABLED", False) is True
    assert conf.setting("METRICS_ENABLED", False) is django_settings.METRICS_ENABLED


def test_gateway_is_the_settings_dict_itself(settings):
    assert conf.gateway() is django_settings.IFLOW2API
    settings.IFLOW2API = {**django_settings.IFLOW2API, "POOL_QUEUE_MAX": 9}  # restored after
    assert conf.gateway()["POOL_QUEUE_MAX"] == 9
    assert conf.gateway() is django_settings.IFLOW2API
    django_settings.IFLOW2API["POOL_QUEUE_MAX"] = 7  # a change in place: the same dict
    assert conf.gateway()["POOL_QUEUE_MAX"] == 7


def test_a_setting_that_is_not_there_is_not_kept(settings):
    assert conf.setting("IFLOW2API_NOT_A_SETTING", "fallback") == "fallback"
    assert "IFLOW2API_NOT_A_SETTING" not in conf._read
    settings.IFLOW2API_NOT_A_SETTING = "set"
    assert conf.setting("IFLOW2API_NOT_A_SETTING", "fallback") == "set"
