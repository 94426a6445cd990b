"""Stream positions for events, given at commit time (see AuditEvent.stream_position).

On PostgreSQL, a deferred constraint trigger runs for each new event row just before its
transaction commits: it takes one advisory lock (held until the commit has ended) and numbers
the row from a sequence. Two transactions therefore get their positions in the order they commit,
and a reader that sees position N has already been able to see every position below it.
"""

from django.db import migrations, models

LOCK_KEY = 7_242_031  # pg_advisory_xact_lock key of the event stream; any constant will do

FORWARD = f"""
CREATE SEQUENCE releasecenter_auditevent_position_seq;
SELECT setval('releasecenter_auditevent_position_seq',
              COALESCE((SELECT max(id) FROM releasecenter_auditevent), 0) + 1, false);
UPDATE releasecenter_auditevent SET stream_position = id;
CREATE FUNCTION releasecenter_auditevent_position() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({LOCK_KEY});
    UPDATE releasecenter_auditevent
       SET stream_position = nextval('releasecenter_auditevent_position_seq')
     WHERE id = NEW.id;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER releasecenter_auditevent_position
    AFTER INSERT ON releasecenter_auditevent
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION releasecenter_auditevent_position();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS releasecenter_auditevent_position ON releasecenter_auditevent;
DROP FUNCTION IF EXISTS releasecenter_auditevent_position();
DROP SEQUENCE IF EXISTS releasecenter_auditevent_position_seq;
"""


def forward(apps, schema_editor):  # noqa: ANN001, ANN201
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


def backward(apps, schema_editor):  # noqa: ANN001, ANN201
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("releasecenter", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="stream_position",
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(
                fields=["topic", "stream_position"], name="auditevent_topic_position"
            ),
        ),
        migrations.RunPython(forward, backward),
    ]
