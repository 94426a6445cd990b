"""How long raw results are kept follows settings.CHECK_RESULT_RETENTION_DAYS (30 by default);
rollups, and so the uptime figures, are kept for a year whatever it says."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings
from django.utils import timezone

from monitoring import services
from monitoring.models import CheckResult, CheckRollup, result_retention_days

from .support import allow, make_check

AGES = (1, 6, 8, 29, 31, 200)


def seed(personas) -> None:
    allow(personas.staging)
    check = make_check(personas, "http://127.0.0.1:9/health")
    [check] = services.load_checks([check.pk])
    now = timezone.now()
    services._record(
        [
            services.Outcome(
                check=check,
                passed=True,
                status_code=200,
                latency_ms=5.0,
                failures=[],
                error="",
                excerpt="",
                started_at=now - timedelta(days=days, hours=1),
            )
            for days in AGES
        ],
        trigger="schedule",
    )


def kept_ages() -> list[int]:
    now = timezone.now()
    return sorted(
        (now - at).days for at in CheckResult.objects.values_list("started_at", flat=True)
    )


def test_thirty_days_without_the_setting(personas, settings):
    if hasattr(settings, "CHECK_RESULT_RETENTION_DAYS"):
        del settings.CHECK_RESULT_RETENTION_DAYS
    assert result_retention_days() == 30
    seed(personas)
    assert services.prune()["results"] == 2
    assert kept_ages() == [1, 6, 8, 29]


@pytest.mark.parametrize(("days", "kept"), [(7, [1, 6]), (90, [1, 6, 8, 29, 31]), (2, [1])])
def test_the_setting_decides_what_is_pruned(personas, days, kept):
    seed(personas)
    with override_settings(CHECK_RESULT_RETENTION_DAYS=days):
        deleted = services.prune()
    assert deleted["results"] == len(AGES) - len(kept)
    assert kept_ages() == kept
    # The daily rollups behind the uptime figures stay, all six of them.
    assert CheckRollup.objects.filter(span="day").count() == len(AGES)


def test_the_check_page_names_the_retention_in_force(client, personas):
    allow(personas.staging)
    check = make_check(personas, "http://127.0.0.1:9/health")
    [loaded] = services.load_checks([check.pk])
    services._record(
        [
            services.Outcome(
                check=loaded,
                passed=True,
                status_code=200,
                latency_ms=5.0,
                failures=[],
                error="",
                excerpt="",
                started_at=timezone.now(),
            )
        ],
        trigger="schedule",
    )
    client.force_login(personas.viewer)
    with override_settings(CHECK_RESULT_RETENTION_DAYS=14):
        html = client.get(f"/p/shop/health/checks/{check.pk}/").content.decode()
    assert "in the results kept (14 days)" in html


@pytest.mark.parametrize("value", [0, -3, "soon", 1.5, None, True])
def test_a_bad_setting_is_refused_at_start_up_and_prunes_nothing(personas, value):
    seed(personas)
    with override_settings(CHECK_RESULT_RETENTION_DAYS=value):
        with pytest.raises(ImproperlyConfigured, match="CHECK_RESULT_RETENTION_DAYS"):
            services.prune()
        with pytest.raises(SystemCheckError, match="monitoring.E001"):
            call_command("check")
    assert CheckResult.objects.count() == len(AGES)
