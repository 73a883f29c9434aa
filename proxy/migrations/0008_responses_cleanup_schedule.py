"""The cleanup of stored Responses API answers past RESPONSES_RETENTION_DAYS: django-celery-beat's
PeriodicTask "delete expired stored responses", hourly (edit it in the admin). Run by Celery
beat with REDIS_URL; without it, `iflow2api serve` deletes expired rows itself at most hourly
when it stores a response (proxy/responses_state.py), and never serves them either way."""

from django.db import migrations
from django.utils import timezone

NAME = "delete expired stored responses"
TASK = "proxy.tasks.delete_expired_responses_task"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    if PeriodicTask.objects.filter(name=NAME).exists():
        return
    interval = IntervalSchedule.objects.filter(every=1, period="hours").first()
    if interval is None:
        interval = IntervalSchedule.objects.create(every=1, period="hours")
    PeriodicTask.objects.create(
        name=NAME, task=TASK, interval=interval, enabled=True,
        description="Delete the stored Responses API answers older than "
        "RESPONSES_RETENTION_DAYS.")
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=NAME).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("proxy", "0007_stored_responses"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
