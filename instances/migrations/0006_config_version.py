"""Triggers on the instances app's tables for the configuration version
(accounts/config_version.py)."""

from django.db import migrations

from accounts import config_version

WATCHED = {"instances.Instance": ("accounts",), "instances.ClientKey": (),
           "instances.RateRule": (), "instances.Budget": ()}


def forwards(apps, schema_editor):
    config_version.watch(schema_editor, config_version.tables_of(apps, WATCHED))


def backwards(apps, schema_editor):
    config_version.unwatch(schema_editor, config_version.tables_of(apps, WATCHED))


class Migration(migrations.Migration):

    dependencies = [
        ("instances", "0005_budgets"),
        ("accounts", "0009_config_version"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
