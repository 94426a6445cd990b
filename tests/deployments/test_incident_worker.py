"""The demo's failing release path, with a real worker and the simulated cluster: a "bad" tag
fails the rollout, the environment rolls back automatically, and the staging policy opens an
incident naming the deployment (one per deployment), with it as the suspect."""

from __future__ import annotations

import pytest

from monitoring.incidents import auto, selectors
from monitoring.incidents.models import Incident, IncidentSuggestion

from .jobs_helpers import approved_release, configure, set_auto_rollback, wait_for, wait_status
from .test_deploy_worker import start

pytestmark = pytest.mark.celery_worker


def test_bad_tag_opens_an_incident_per_staging_policy(personas, start_sim, start_worker) -> None:  # noqa: ANN001
    sim = start_sim(rollout_seconds=0.3, progress_deadline_seconds=1)
    configure(personas, sim)
    set_auto_rollback(personas, personas.staging, True)
    auto.set_policy(
        personas.admin,
        personas.membership(personas.admin),
        personas.staging,
        mode="open",
        severity="P2",
    )
    release = approved_release(personas, version="1.4.0-bad")
    start_worker()
    deployment = start(personas, release)
    wait_status(deployment.pk, ("rolled_back", "failed"), timeout=60)
    incident = wait_for(
        lambda: Incident.objects.filter(cause=f"deployment:{deployment.pk}").first(),
        timeout=20,
        what="an incident for the failed deployment",
    )
    assert incident.title.startswith(f"Deployment #{deployment.pk} of 1.4.0-bad to staging")
    assert "rolled back automatically" in incident.title
    assert incident.severity == "P2" and incident.status == "investigating"
    assert [s.id for s in selectors.suspects(incident)] == [f"deployment:{deployment.pk}"]
    assert Incident.objects.count() == 1 and not IncidentSuggestion.objects.exists()
