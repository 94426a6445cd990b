"""The severity policy keeps seconds instead of minutes, so an SLA can be shorter than a minute
(the on-call API has always spoken seconds). Existing rows are converted ×60 (and back)."""

from django.db import migrations, models
from django.db.models import F


def minutes_to_seconds(apps, schema_editor):  # noqa: ANN001, ANN201
    SeverityPolicy = apps.get_model("monitoring", "SeverityPolicy")
    rows = SeverityPolicy.objects.using(schema_editor.connection.alias)
    rows.filter(acknowledge_seconds__isnull=False).update(
        acknowledge_seconds=F("acknowledge_seconds") * 60
    )
    rows.filter(update_seconds__isnull=False).update(update_seconds=F("update_seconds") * 60)


def seconds_to_minutes(apps, schema_editor):  # noqa: ANN001, ANN201
    # Rounded up, so a reversed SLA is never stricter than the one that was set.
    SeverityPolicy = apps.get_model("monitoring", "SeverityPolicy")
    rows = SeverityPolicy.objects.using(schema_editor.connection.alias)
    rows.filter(acknowledge_seconds__isnull=False).update(
        acknowledge_seconds=(F("acknowledge_seconds") + 59) / 60
    )
    rows.filter(update_seconds__isnull=False).update(update_seconds=(F("update_seconds") + 59) / 60)


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0009_ping_inbox_rollup_unique_covering"),
    ]

    operations = [
        migrations.RenameField(
            model_name="severitypolicy",
            old_name="acknowledge_minutes",
            new_name="acknowledge_seconds",
        ),
        migrations.RenameField(
            model_name="severitypolicy",
            old_name="update_minutes",
            new_name="update_seconds",
        ),
        migrations.RunPython(minutes_to_seconds, seconds_to_minutes),
    ]
