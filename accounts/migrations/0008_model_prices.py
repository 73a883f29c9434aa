from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0007_anthropic_accounts"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelinfo",
            name="price_input",
            field=models.DecimalField(
                blank=True, decimal_places=6, max_digits=12, null=True,
                help_text="Per million input tokens (not read from the cache).",
                verbose_name="input price"),
        ),
        migrations.AddField(
            model_name="modelinfo",
            name="price_cached_input",
            field=models.DecimalField(
                blank=True, decimal_places=6, max_digits=12, null=True,
                help_text="Per million input tokens read from the prompt cache; empty: the "
                          "input price.",
                verbose_name="cached input price"),
        ),
        migrations.AddField(
            model_name="modelinfo",
            name="price_cache_write",
            field=models.DecimalField(
                blank=True, decimal_places=6, max_digits=12, null=True,
                help_text="Per million input tokens written to the prompt cache "
                          "(Anthropic-style caches); empty: the input price.",
                verbose_name="cache write price"),
        ),
        migrations.AddField(
            model_name="modelinfo",
            name="price_output",
            field=models.DecimalField(
                blank=True, decimal_places=6, max_digits=12, null=True,
                help_text="Per million output tokens (reasoning included).",
                verbose_name="output price"),
        ),
        migrations.AddField(
            model_name="modelinfo",
            name="price_currency",
            field=models.CharField(
                default="USD", help_text="ISO 4217 code of the prices, e.g. USD or CNY.",
                max_length=3, verbose_name="currency"),
        ),
    ]
