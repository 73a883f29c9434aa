from django.db import migrations

from accounts.catalog import IFLOW_MODELS


def seed(apps, schema_editor):
    ModelInfo = apps.get_model("accounts", "ModelInfo")
    for model_id, name, owner, context, output, vision in IFLOW_MODELS:
        ModelInfo.objects.get_or_create(
            model_id=model_id,
            defaults={
                "display_name": name,
                "provider": "iflow",
                "owned_by": owner,
                "context_length": context,
                "max_output_tokens": output,
                "vision": vision,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
