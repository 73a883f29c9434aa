from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("proxy", "0004_request_id"),
    ]

    operations = [
        migrations.AddField(
            model_name="requestlog",
            name="tokens_cached",
            field=models.PositiveIntegerField(
                blank=True, help_text="Of the tokens in, those the upstream read from its prompt cache",
                null=True, verbose_name="cached tokens"),
        ),
    ]
