"""Leave room in the check table's pages for updates that keep their tuple on the page (HOT).

Every run of a check updates its row twice (the worker takes its batch by clearing the dispatch
token, then stores the latest result), and none of those columns is indexed, so PostgreSQL can
write the new version beside the old one without touching the table's ten indexes, but only if
the page has room. At the default fillfactor of 100 it has none, and each update adds an entry to
every index (bench/bench_checks.py: clearing a batch's tokens 50 -> 20 us a check, storing the
latest results 33 -> 18 us). Pages written before this keep their layout until rewritten.
Other databases have no such setting.
"""

from django.db import migrations


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE monitoring_check SET (fillfactor = 70)")


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE monitoring_check RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0004_rollup_read_index_postgresql_only")]

    operations = [migrations.RunPython(forwards, backwards)]
