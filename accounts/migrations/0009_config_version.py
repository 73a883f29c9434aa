"""The configuration version the snapshots check before reloading (accounts/config_version.py):
its counter, and triggers on the accounts app's tables."""

from django.db import migrations

from accounts import config_version

WATCHED = {"accounts.Account": (), "accounts.ModelInfo": ("accounts",)}


def forwards(apps, schema_editor):
    config_version.create_counter(schema_editor)
    config_version.watch(schema_editor, config_version.tables_of(apps, WATCHED))


def backwards(apps, schema_editor):
    config_version.unwatch(schema_editor, config_version.tables_of(apps, WATCHED))
    config_version.drop_counter(schema_editor)


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0008_model_prices"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
