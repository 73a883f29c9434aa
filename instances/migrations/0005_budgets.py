import django.core.validators
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("instances", "0004_instance_listening_on"),
    ]

    operations = [
        migrations.CreateModel(
            name="Budget",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("period", models.CharField(
                    choices=[("day", "Per day"), ("week", "Per week (from Monday)"),
                             ("month", "Per month")],
                    default="month", max_length=8, verbose_name="period")),
                ("spend_limit", models.DecimalField(
                    blank=True, decimal_places=4, max_digits=16, null=True,
                    help_text="In the currency below; requests of models priced in another "
                              "currency, or whose cost is unknown, do not count.",
                    verbose_name="spend limit")),
                ("currency", models.CharField(default="USD", max_length=3,
                                              verbose_name="currency")),
                ("token_limit", models.PositiveBigIntegerField(
                    blank=True, null=True,
                    help_text="Input and output tokens, as the upstream counted them.",
                    verbose_name="token limit")),
                ("warn_percent", models.PositiveSmallIntegerField(
                    default=80,
                    help_text="A warning on the live status page and in the log from this "
                              "share on.",
                    validators=[django.core.validators.MinValueValidator(1),
                                django.core.validators.MaxValueValidator(100)],
                    verbose_name="warn at (%)")),
                ("enabled", models.BooleanField(default=True, verbose_name="enabled")),
                ("instance", models.ForeignKey(
                    blank=True, help_text="The whole instance, all keys together.", null=True,
                    on_delete=django.db.models.deletion.CASCADE, related_name="budgets",
                    to="instances.instance", verbose_name="instance")),
                ("key", models.ForeignKey(
                    blank=True, help_text="This client key alone.", null=True,
                    on_delete=django.db.models.deletion.CASCADE, related_name="budgets",
                    to="instances.clientkey", verbose_name="key")),
            ],
            options={"verbose_name": "budget", "verbose_name_plural": "budgets",
                     "ordering": ["id"]},
        ),
    ]
