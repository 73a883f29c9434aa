"""The token refresh schedule: django-celery-beat's PeriodicTask "refresh iFlow accounts", every
REFRESH_CHECK_SECONDS (at the time of `migrate`; edit it in the admin afterwards). Celery beat
(with REDIS_URL) and the in-process scheduler of `iflow2api serve` (without) both follow it."""

from django.conf import settings
from django.db import migrations
from django.utils import timezone

NAME = "refresh iFlow accounts"
TASK = "accounts.tasks.refresh_due_accounts_task"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    if PeriodicTask.objects.filter(name=NAME).exists():
        return
    seconds = max(1, round(float(settings.IFLOW2API.get("REFRESH_CHECK_SECONDS", 300))))
    interval = IntervalSchedule.objects.filter(every=seconds, period="seconds").first()
    if interval is None:
        interval = IntervalSchedule.objects.create(every=seconds, period="seconds")
    PeriodicTask.objects.create(
        name=NAME,
        task=TASK,
        interval=interval,
        enabled=True,
        description="Refresh iFlow OAuth tokens (< 24 h left) and cookie API keys (< 48 h "
        "left). Run by Celery beat with REDIS_URL, by `iflow2api serve` itself without.",
    )
    # A running beat notices the new task.
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=NAME).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0003_refresh_and_oauth"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
