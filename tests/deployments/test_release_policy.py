"""The environment policy page: project admins edit it in one save, everyone else reads it, and
bad input changes nothing. The project-wide quorum rule lives on the same page."""

from __future__ import annotations

from datetime import timedelta

import pytest

from checklists import services as checklists
from deployments import services
from deployments.models import EnvironmentPolicy, ReleaseTarget, SignoffRequirement
from releasecenter.models import AuditEvent

RUNBOOK = """# Go-live

## Proof (NO-GO)
- [ ] Database backup verified
"""


def url(personas, environment="production"):
    return f"/p/{personas.project.slug}/environments/{environment}/policy/"


def good_policy(template=None, **changes):
    data = {
        "action": "policy",
        "min_notice_hours": "24",
        "require_previous_verified": "on",
        "block_on_incidents": "P2",
        "auto_rollback": "on",
        "signoff_roles": "Backend Engineer: 1\nCode review: 2\n",
    }
    if template is not None:
        data["checklist_templates"] = [str(template.pk)]
    data.update(changes)
    return data


def requirements(environment):
    return list(
        SignoffRequirement.objects.filter(environment=environment)
        .order_by("id")
        .values_list("role", "quorum")
    )


@pytest.fixture
def template(personas):
    return checklists.import_runbook(personas.admin, personas.project, RUNBOOK).template


def test_admin_saves_the_whole_policy_in_one_go_and_it_is_audited(client, personas, template):
    client.force_login(personas.admin)
    page = client.get(url(personas))
    assert page.status_code == 200
    assert 'name="signoff_roles"' in page.content.decode()
    response = client.post(url(personas), good_policy(template))
    assert response.status_code == 302
    policy = EnvironmentPolicy.objects.get(environment=personas.production)
    assert policy.min_notice == timedelta(hours=24)
    assert policy.require_previous_verified and policy.auto_rollback
    assert policy.block_on_incidents == "P2"
    assert list(policy.checklist_templates.all()) == [template]
    assert requirements(personas.production) == [("Backend Engineer", 1), ("Code review", 2)]
    updated = AuditEvent.objects.get(verb="environment.policy_updated")
    assert updated.actor == personas.admin and updated.project_id == personas.project.pk
    assert updated.after["min_notice"] == "1 day, 0:00:00"
    assert updated.after["checklist_templates"] == [template.pk]
    required = AuditEvent.objects.get(verb="environment.signoffs_required")
    assert required.after == {"Backend Engineer": 1, "Code review": 2}
    again = client.get(url(personas)).content.decode()
    assert "Backend Engineer: 1\nCode review: 2" in again


def test_member_who_is_not_admin_reads_but_may_not_edit(client, personas):
    services.set_signoff_requirements(
        personas.admin,
        personas.membership(personas.admin),
        personas.production,
        [("Security Review", 1)],
    )
    client.force_login(personas.lead)
    page = client.get(url(personas))
    assert page.status_code == 200
    body = page.content.decode()
    assert "Security Review ×1" in body
    assert 'name="signoff_roles"' not in body and "Save policy" not in body
    refused = client.post(url(personas), good_policy())
    assert refused.status_code == 403
    refused_rule = client.post(
        url(personas), {"action": "quorum-rule", "quorum-requester_counts_for_quorum": "on"}
    )
    assert refused_rule.status_code == 403
    assert requirements(personas.production) == [("Security Review", 1)]
    assert not EnvironmentPolicy.objects.filter(environment=personas.production).exists()
    personas.project.refresh_from_db()
    assert personas.project.requester_counts_for_quorum is False


def test_outsider_gets_404(client, personas):
    client.force_login(personas.outsider)
    assert client.get(url(personas)).status_code == 404
    assert client.post(url(personas), good_policy()).status_code == 404
    assert client.get(url(personas, "staging")).status_code == 404
    # Their own project answers, so the 404 above is about membership, not a broken URL.
    assert client.get("/p/elsewhere/environments/staging/policy/").status_code == 200
    assert not AuditEvent.objects.filter(verb__startswith="environment.policy").exists()


@pytest.mark.parametrize(
    ("signoff_roles", "message"),
    [
        (
            "Backend Engineer: 1\nBackend Engineer: 2",
            "Line 2: &#x27;Backend Engineer&#x27; is listed twice.",
        ),
        (
            "Backend Engineer: 1\nCode review: 11",
            "Line 2: The quorum of &#x27;Code review&#x27; is 1 to 10.",
        ),
        ("Code review: 0", "Line 1: The quorum of &#x27;Code review&#x27; is 1 to 10."),
        ("R" * 81 + ": 1", "Line 1: A role name is 1 to 80 characters."),
        (": 2", "Line 1: A role name is 1 to 80 characters."),
        ("Code review: two", "Line 1: the quorum after &#x27;:&#x27; must be a whole number."),
    ],
)
def test_bad_input_shows_an_error_and_changes_nothing(
    client, personas, template, signoff_roles, message
):
    admin_m = personas.membership(personas.admin)
    services.set_signoff_requirements(
        personas.admin, admin_m, personas.production, [("Security Review", 1)]
    )
    services.update_policy(personas.admin, admin_m, personas.production, auto_rollback=False)
    events_before = AuditEvent.objects.count()
    client.force_login(personas.admin)
    response = client.post(url(personas), good_policy(template, signoff_roles=signoff_roles))
    assert response.status_code == 400
    assert message in response.content.decode()
    policy = EnvironmentPolicy.objects.get(environment=personas.production)
    # The valid parts of the same form were not saved either.
    assert policy.min_notice is None and not policy.auto_rollback
    assert not policy.require_previous_verified
    assert not policy.checklist_templates.exists()
    assert requirements(personas.production) == [("Security Review", 1)]
    assert AuditEvent.objects.count() == events_before


def test_service_refuses_bad_requirements_before_touching_the_policy(personas, template):
    admin_m = personas.membership(personas.admin)
    with pytest.raises(Exception, match="listed twice"):
        services.save_environment_policy(
            personas.admin,
            admin_m,
            personas.production,
            signoff_requirements=[("Code review", 1), ("Code  review", 2)],
            checklist_templates=[template],
            min_notice=timedelta(hours=48),
        )
    assert not EnvironmentPolicy.objects.filter(environment=personas.production).exists()
    assert not SignoffRequirement.objects.exists()
    assert (
        not AuditEvent.objects.filter(verb__startswith="environment.")
        .exclude(verb="environment.created")
        .exists()
    )


def test_new_required_role_takes_back_an_approval(personas):
    release = services.create_release(
        personas.member,
        personas.membership(personas.member),
        version="7.0.0",
        commit_sha="abcdef123456",
        environments=["production"],
    )
    services.submit_for_review(personas.member, personas.membership(personas.member), release)
    target = ReleaseTarget.objects.get(release=release)
    assert target.status == "approved"
    services.save_environment_policy(
        personas.admin,
        personas.membership(personas.admin),
        personas.production,
        signoff_requirements=[("Security Review", 1)],
    )
    target.refresh_from_db()
    assert target.status == "in_review"


def test_quorum_rule_is_project_wide_and_saved_by_admins(client, personas):
    client.force_login(personas.admin)
    page = client.get(url(personas, "staging")).content.decode()
    assert "This setting is project-wide: it applies to every environment of Shop" in page
    response = client.post(
        url(personas, "staging"),
        {"action": "quorum-rule", "quorum-requester_counts_for_quorum": "on"},
    )
    assert response.status_code == 302
    personas.project.refresh_from_db()
    assert personas.project.requester_counts_for_quorum is True
    event = AuditEvent.objects.get(verb="project.quorum_rule_changed")
    assert event.actor == personas.admin
    assert event.after == {"requester_counts_for_quorum": True}
    client.post(url(personas, "production"), {"action": "quorum-rule"})
    personas.project.refresh_from_db()
    assert personas.project.requester_counts_for_quorum is False
    client.force_login(personas.viewer)
    shown = client.get(url(personas)).content.decode()
    assert "does not count towards its sign-off quorum" in shown


def test_unknown_action_is_a_400(client, personas):
    client.force_login(personas.admin)
    assert client.post(url(personas), {"action": "drop-tables"}).status_code == 400
    assert client.post(url(personas), {"action": "delete-window", "window": "x"}).status_code == 404
