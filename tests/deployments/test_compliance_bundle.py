"""The compliance bundle holds what was deployed and why it was allowed: every deployment with
its commit, images, steps and requester, the decision stored when it started, the release
timeline, and a signed manifest that ``manage.py verify_bundle`` checks offline."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest
from django.core.management import CommandError, call_command

from deployments import services
from deployments.bundle import MANIFEST, SIGNATURE, build_bundle, verify

from .jobs_helpers import approved_release, configure, wait_status

pytestmark = pytest.mark.celery_worker


@pytest.fixture
def deployed(personas, start_sim, start_worker):
    """1.4.0 deployed to staging by a lead, run to the end by a real worker against the
    simulated cluster; production is reachable too."""
    sim = start_sim(rollout_seconds=0.2)
    configure(personas, sim)
    configure(personas, sim, "shop-prod", environment=personas.production)
    release = approved_release(personas)
    start_worker()
    deployment, _ = services.start_deployment(
        personas.lead,
        personas.membership(personas.lead),
        release,
        personas.staging,
    )
    wait_status(deployment.pk, "succeeded")
    return personas, release, deployment


def _zip(data: bytes) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(data))


def test_the_bundle_holds_deployments_decisions_and_the_timeline(deployed, client):
    personas, release, deployment = deployed
    client.force_login(personas.viewer)
    response = client.get(f"/p/{personas.project.slug}/releases/{release.pk}/compliance.zip")
    assert response.status_code == 200
    archive = _zip(response.content)
    names = set(archive.namelist())
    assert {"report.json", "report.md", "timeline.json", "timeline.md", MANIFEST, SIGNATURE} <= (
        names
    )
    assert f"deployments/deployment-{deployment.pk}.json" in names

    report = json.loads(archive.read("report.json"))
    [record] = report["deployments"]
    assert record["id"] == deployment.pk and record["environment"] == "staging"
    assert record["commit_sha"] == "abcdef1234" and record["status"] == "succeeded"
    assert record["requested_by"] == "liam-lead"
    assert record["images"]["api"] == {
        "before": "registry.example/api:1.3.0",
        "after": "registry.example/api:1.4.0",
    }
    assert {(s["service"], s["kind"], s["status"]) for s in record["steps"]} >= {
        ("api", "apply", "succeeded"),
        ("web", "verify", "succeeded"),
    }
    snapshot = record["decision_at_start"]
    assert snapshot["decision"] == "go" and snapshot["commit"] == "abcdef1234"
    assert snapshot["reasons"] == [] and snapshot["overridden"] is False

    timeline = json.loads(archive.read("timeline.json"))
    verbs = [e["verb"] for e in timeline]
    assert "release.created" in verbs and "deployment.created" in verbs
    assert any(e["text"] == "staging: deployed → verified" for e in timeline)
    md = archive.read("report.md").decode()
    assert f"Deployment #{deployment.pk}: deploy 1.4.0 to staging — succeeded" in md
    assert "registry.example/api:1.3.0 → registry.example/api:1.4.0" in md


def test_an_override_keeps_the_decision_it_overrode(deployed):
    personas, release, _ = deployed
    services.update_policy(
        personas.admin,
        personas.membership(personas.admin),
        personas.production,
        require_previous_verified=True,
    )
    services.update_release(
        personas.member, personas.membership(personas.member), release, commit_sha="fedcba4321"
    )
    again, _ = services.start_deployment(
        personas.lead,
        personas.membership(personas.lead),
        release,
        personas.production,
        override_reason="staging is down for maintenance; hotfix needed",
    )
    wait_status(again.pk, ("succeeded", "failed"))
    report = json.loads(_zip(build_bundle(release)).read("report.json"))
    record = next(d for d in report["deployments"] if d["id"] == again.pk)
    assert record["commit_sha"] == "fedcba4321" and record["environment"] == "production"
    assert record["override"]["reason"] == "staging is down for maintenance; hotfix needed"
    snapshot = record["decision_at_start"]
    assert snapshot["decision"] == "no-go" and snapshot["overridden"] is True
    assert [r["code"] for r in snapshot["reasons"]] == ["previous_environment"]


def test_verify_bundle_accepts_a_bundle_and_names_a_modified_file(deployed, tmp_path, capsys):
    _personas, release, deployment = deployed
    data = build_bundle(release)
    good = tmp_path / "bundle.zip"
    good.write_bytes(data)
    call_command("verify_bundle", str(good))
    assert "OK" in capsys.readouterr().out

    # The same bundle with one deployment record changed, everything else copied as it was.
    tampered_name = f"deployments/deployment-{deployment.pk}.json"
    bad = tmp_path / "tampered.zip"
    with _zip(data) as source, zipfile.ZipFile(bad, "w") as target:
        for name in source.namelist():
            body = source.read(name)
            if name == tampered_name:
                body = body.replace(b'"liam-lead"', b'"mia-member"')
            target.writestr(name, body)
    with pytest.raises(CommandError, match=tampered_name):
        call_command("verify_bundle", str(bad))
    assert verify(str(bad)).problems == [
        f"{tampered_name}: modified (its SHA-256 differs from the manifest)"
    ]


def test_verify_bundle_refuses_a_rewritten_manifest_and_added_files(deployed, tmp_path):
    _personas, release, _ = deployed
    data = build_bundle(release)
    path = tmp_path / "rewritten.zip"
    addition = b"\nApproved by the CEO.\n"
    with _zip(data) as source, zipfile.ZipFile(path, "w") as target:
        changed = source.read("report.md") + addition
        for name in source.namelist():
            body = source.read(name)
            if name == "report.md":
                body = changed
            if name == MANIFEST:
                # Someone recomputes the digest of the file they changed, but cannot re-sign.
                digest = hashlib.sha256(changed).hexdigest()
                lines = [
                    f"{digest}  report.md" if line.endswith("  report.md") else line
                    for line in body.decode().splitlines()
                ]
                body = ("\n".join(lines) + "\n").encode()
            target.writestr(name, body)
        target.writestr("evidence/extra.txt", b"planted")
    problems = verify(str(path)).problems
    assert problems[0].startswith(f"{MANIFEST}: its signature does not match")
    assert "evidence/extra.txt: not listed in the manifest (added after signing)" in problems
    with pytest.raises(CommandError):
        call_command("verify_bundle", str(path))
    with pytest.raises(CommandError, match="not a readable zip"):
        (tmp_path / "junk.zip").write_bytes(b"not a zip")
        call_command("verify_bundle", str(tmp_path / "junk.zip"))
