from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("proxy", "0005_cached_tokens"),
    ]

    operations = [
        migrations.AddField(
            model_name="requestlog",
            name="cost",
            field=models.DecimalField(
                blank=True, decimal_places=10, max_digits=20, null=True,
                help_text="From the upstream's usage and the model's prices; empty: cost unknown",
                verbose_name="cost"),
        ),
        migrations.AddField(
            model_name="requestlog",
            name="cost_currency",
            field=models.CharField(blank=True, max_length=3, verbose_name="currency"),
        ),
    ]
