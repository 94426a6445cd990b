"""A failed or rolled-back deployment of a release in an environment counts against it there
(issue 12, point 6): a decision reason linking to the deployment, until a later deployment of
it succeeds or a lead overrides."""

from __future__ import annotations

import pytest

from deployments import services
from deployments.decision import decide
from deployments.models import Deployment, DeploymentStep, Release
from deployments.services import jobs

from .jobs_helpers import claimed_deployment


def _setback(release, environment):  # noqa: ANN001, ANN202
    return [r for r in decide(release, environment).reasons if r.code == "deployment_failed"]


def test_a_failed_deployment_is_no_go_until_a_later_one_succeeds(personas, client):
    deployment, token = claimed_deployment(personas, "worker-a")
    release = Release.objects.get(pk=deployment.release_id)
    jobs.finish_run(deployment.pk, token, "failed", "api: rollout timed out")

    reasons = _setback(release, personas.staging)
    link = f"/p/{personas.project.slug}/deployments/{deployment.pk}/"
    assert len(reasons) == 1 and reasons[0].link == link
    assert f"Deployment #{deployment.pk} of 1.4.0 to staging failed" in reasons[0].message
    # The page shows NO-GO with the link, and no Deploy button for an engineer.
    client.force_login(personas.member)
    html = client.get(f"/p/{personas.project.slug}/releases/{release.pk}/").content.decode()
    staging = html.split('data-environment="staging"')[1].split("</article>")[0]
    assert "NO-GO" in staging and f'href="{link}"' in staging
    assert 'data-action="deploy"' not in staging
    with pytest.raises(services.DeployRefused) as refused:
        jobs.start_deployment(
            personas.member, personas.membership(personas.member), release, personas.staging
        )
    assert [r.code for r in refused.value.decision.reasons] == ["deployment_failed"]

    # A lead overrides; once that deployment succeeds, the failure no longer counts.
    again, created = jobs.start_deployment(
        personas.lead,
        personas.membership(personas.lead),
        release,
        personas.staging,
        override_reason="the timeout was the cluster, not the release",
    )
    assert created and again.override.reasons[0]["code"] == "deployment_failed"
    again, token = jobs.claim(again.pk, "worker-b")
    jobs.finish_run(again.pk, token, "succeeded")
    assert _setback(release, personas.staging) == []
    assert decide(release, personas.staging).go


def test_a_rolled_back_deployment_counts_against_the_release(personas):
    deployment, token = claimed_deployment(personas, "worker-a")
    release = Release.objects.get(pk=deployment.release_id)
    DeploymentStep.objects.filter(deployment=deployment, kind="apply").update(status="succeeded")
    jobs.finish_run(deployment.pk, token, "succeeded")
    assert decide(release, personas.staging).go
    rollback = jobs.request_rollback(
        personas.member, personas.membership(personas.member), deployment, "errors in the logs"
    )
    assert _setback(release, personas.staging)[0].message.endswith(
        "failed and is rolling back; it counts against this release here until a deployment "
        "of it succeeds"
    )
    rollback, rollback_token = jobs.claim(rollback.pk, "worker-a")
    jobs.finish_run(rollback.pk, rollback_token, "succeeded")
    assert Deployment.objects.get(pk=deployment.pk).status == "rolled_back"
    reasons = _setback(release, personas.staging)
    assert len(reasons) == 1
    assert f"Deployment #{deployment.pk} of 1.4.0 to staging was rolled back" in reasons[0].message

    # The failure was this commit's; a new commit has run nowhere and starts clean.
    services.update_release(
        personas.member, personas.membership(personas.member), release, commit_sha="0123456789ab"
    )
    assert _setback(release, personas.staging) == []
