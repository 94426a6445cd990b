"""Keep the covering index of rollups on PostgreSQL only.

0002 declared it on the model, which makes SQLite (the embedded default) warn on every start
(models.W040) and keep a plain copy of the unique constraint's index. The model no longer
declares it; PostgreSQL keeps the index 0002 made, other databases drop their copy.
"""

from django.db import migrations

INDEX = "rollup_read"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.execute(
            f"CREATE INDEX {INDEX} ON monitoring_checkrollup (health_check_id, span, start)"
        )


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0003_target_metric_labels")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.RemoveIndex(model_name="checkrollup", name=INDEX)],
            database_operations=[migrations.RunPython(forwards, backwards)],
        ),
    ]
