"""Migration 0010: severity policies kept in minutes become seconds (×60), and back."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("monitoring", "0009_ping_inbox_rollup_unique_covering")]
AFTER = [("monitoring", "0010_severity_policy_in_seconds")]


def migrate(targets):  # noqa: ANN001, ANN201
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_minutes_become_seconds_and_back(personas):
    apps = migrate(BEFORE)
    try:
        policy = apps.get_model("monitoring", "SeverityPolicy")
        policy.objects.create(
            project_id=personas.project.pk, severity="P1", acknowledge_minutes=15, update_minutes=30
        )
        policy.objects.create(
            project_id=personas.project.pk,
            severity="P4",
            acknowledge_minutes=None,
            update_minutes=0,
        )
        apps = migrate(AFTER)
        policy = apps.get_model("monitoring", "SeverityPolicy")
        assert sorted(
            policy.objects.values_list("severity", "acknowledge_seconds", "update_seconds")
        ) == [("P1", 900, 1800), ("P4", None, 0)]
        policy.objects.filter(severity="P1").update(acknowledge_seconds=3)
        apps = migrate(BEFORE)
        policy = apps.get_model("monitoring", "SeverityPolicy")
        # Back to minutes, rounded up: never a stricter SLA than the one that was set.
        assert sorted(
            policy.objects.values_list("severity", "acknowledge_minutes", "update_minutes")
        ) == [("P1", 1, 30), ("P4", None, 0)]
    finally:
        migrate(executor_leaf())


def executor_leaf():  # noqa: ANN201
    return MigrationExecutor(connection).loader.graph.leaf_nodes()
