"""The demo's release: seed_demo adds release 1.4.0 in review, whose production environment
requires four role sign-offs and has its checklist runs, so the decision has something true
to say."""

from __future__ import annotations

import io

from django.core.management import call_command

from deployments.decision import decide
from deployments.demo import DEMO_VERSION, PRODUCTION_ROLES
from deployments.models import Release, ReleaseTarget, SignoffRequirement

FOUR_ROLES = ["Backend Engineer", "DevOps Engineer", "Security Review", "Technical Lead"]


def seed() -> None:
    call_command("seed_demo", "--quiet-logins", stdout=io.StringIO())


def test_demo_release_is_in_review_and_production_needs_four_sign_offs(db):
    seed()
    release = Release.objects.select_related("project").get(
        project__slug="acme-shop", version=DEMO_VERSION
    )
    assert DEMO_VERSION == "1.4.0" and PRODUCTION_ROLES == FOUR_ROLES
    targets = {
        t.environment.name: t
        for t in ReleaseTarget.objects.filter(release=release).select_related("environment")
    }
    assert list(targets) == ["staging", "production"]
    production = targets["production"]
    assert production.status == "in_review"
    assert targets["staging"].status in ("in_review", "approved")
    assert sorted(
        SignoffRequirement.objects.filter(environment=production.environment).values_list(
            "role", "quorum"
        )
    ) == [(role, 1) for role in FOUR_ROLES]
    runs = list(production.runs.select_related("template"))
    assert [run.template.name for run in runs] == ["Production deployment runbook"]
    assert runs[0].items.exists()
    assert [run.template.name for run in targets["staging"].runs.select_related("template")] == [
        "Staging smoke checklist"
    ]

    decision = decide(release, production.environment)
    assert decision.decision == "no-go"
    missing = [r.message for r in decision.reasons if r.code == "signoff_missing"]
    assert missing == [f"Sign-off missing: {role} needs 1 more (0 of 1)" for role in FOUR_ROLES]
    # The runbook's NO-GO gates are open too, and the decision lists them by their text.
    assert any(r.code == "gate_no_go" for r in decision.reasons)


def test_seeding_twice_adds_nothing(db):
    seed()
    seed()
    assert Release.objects.filter(project__slug="acme-shop", version=DEMO_VERSION).count() == 1
    production = ReleaseTarget.objects.get(
        release__project__slug="acme-shop",
        release__version=DEMO_VERSION,
        environment__name="production",
    )
    assert production.runs.count() == 1
    assert SignoffRequirement.objects.filter(environment=production.environment).count() == 4
