"""External deployments reported by CI through the API, and the demo: its deploy targets point
at the simulated cluster that `manage.py simcluster --seed-project` starts with its services."""

from __future__ import annotations

import io
import os
import shlex
import subprocess

import httpx
from django.core.management import call_command

from deployments import services
from deployments.models import DeployedVersion, Deployment, DeployTarget, ReleaseTarget
from monitoring.models import Check
from tests.conftest import ROOT, _child_env, free_port, stop_process, wait_for_port

from .jobs_helpers import approved_release


def test_an_external_deployment_is_reported_start_steps_finish(personas, api_client_for):
    services.save_deploy_target(
        personas.admin, personas.membership(personas.admin), personas.staging, strategy="external"
    )
    release = approved_release(personas)
    ci = api_client_for(personas.member)
    created = ci.post(
        f"/api/v1/releases/{release.pk}/deployments/", {"environment": "staging"}, format="json"
    )
    assert created.status_code == 201
    pk = created.json()["id"]
    base = f"/api/v1/deployments/{pk}/"
    early = ci.post(base + "steps/", {"service": "api", "kind": "apply", "status": "running"})
    assert early.status_code == 409
    assert ci.post(base + "start/").json()["status"] == "running"
    step = ci.post(
        base + "steps/",
        {
            "service": "api",
            "kind": "wait",
            "status": "running",
            "log": ["kubectl rollout status deploy/api"],
            "progress": {"desired": 3, "updated": 1, "available": 1},
        },
        format="json",
    )
    assert step.status_code == 200, step.content
    assert step.json()["detail"] == {"desired": 3, "updated": 1, "available": 1}
    assert step.json()["log"] == ["kubectl rollout status deploy/api"]
    bad = ci.post(base + "steps/", {"service": "nope", "kind": "wait", "status": "running"})
    assert bad.status_code == 400
    assert (
        ci.post(
            base + "steps/", {"service": "api", "kind": "wait", "status": "pending"}
        ).status_code
        == 400
    )
    ci.post(base + "steps/", {"service": "api", "kind": "wait", "status": "succeeded"})
    backwards = ci.post(base + "steps/", {"service": "api", "kind": "wait", "status": "running"})
    assert backwards.status_code == 409
    assert ci.post(base + "finish/", {"status": "failed"}).status_code == 400
    finished = ci.post(base + "finish/", {"status": "succeeded"})
    assert finished.json()["status"] == "succeeded"
    deployment = Deployment.objects.get(pk=pk)
    assert not deployment.steps.filter(status__in=["pending", "running"]).exists()
    assert ReleaseTarget.objects.get(release=release, environment=personas.staging).status == (
        "verified"
    )
    assert set(
        DeployedVersion.objects.filter(environment=personas.staging).values_list(
            "version", flat=True
        )
    ) == {"1.4.0"}
    assert (
        ci.post(
            base + "steps/", {"service": "api", "kind": "verify", "status": "running"}
        ).status_code
        == 409
    )
    assert ci.post(base + "rollback/").status_code == 400


def procfile_command(process: str) -> str:
    """The command line of one Procfile process, as honcho hands it to a shell."""
    line = next(
        line
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.startswith(f"{process}:")
    )
    return line.split(":", 1)[1].strip()


def procfile_sim_options() -> dict[str, str]:
    """The options of the Procfile's sim process, which README command 1 starts."""
    words = shlex.split(procfile_command("sim"))
    assert words[:3] == ["python", "manage.py", "simcluster"], words
    options = words[3:]
    assert len(options) % 2 == 0 and all(o.startswith("--") for o in options[::2]), options
    return dict(zip(options[::2], options[1::2], strict=True))


def test_procfile_names_commands_on_path_which_the_demo_puts_first(tmp_path):
    """A Procfile names commands found on PATH; the demo's environment puts the venv's first."""
    venv_bin = ROOT / ".venv" / "bin"
    commands = [shlex.split(procfile_command(p))[0] for p in ("web", "worker", "beat", "sim")]
    assert all("/" not in command for command in commands), commands
    found = subprocess.run(
        ["bash", "-c", 'source scripts/demo-env && command -v "$@"', "demo", *commands, "honcho"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "RELEASECENTER_VAR_DIR": str(tmp_path), "SIM_PORT": "1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert found == [str(venv_bin / command) for command in [*commands, "honcho"]]


def test_demo_points_at_the_simulated_cluster_and_simcluster_serves_its_services(
    transactional_db, monkeypatch
):
    monkeypatch.setenv("SIMCLUSTER_URL", "http://127.0.0.1:8001")
    call_command("seed_demo", stdout=io.StringIO())
    targets = DeployTarget.objects.filter(environment__project__slug="acme-shop")
    assert {t.environment.name for t in targets} == {"staging", "production"}
    staging = targets.get(environment__name="staging")
    assert staging.api_url == "http://127.0.0.1:8001" and staging.bearer_token
    assert DeployedVersion.objects.filter(environment=staging.environment).count() == 8
    # The demo starts again and finds 8001 taken (another demo): scripts/demo exports another
    # SIM_PORT and the SIMCLUSTER_URL made of it, and the seed follows the cluster there.
    port = free_port()
    monkeypatch.setenv("SIMCLUSTER_URL", f"http://127.0.0.1:{port}")
    call_command("seed_demo", stdout=io.StringIO())
    staging.refresh_from_db()
    assert staging.api_url == f"http://127.0.0.1:{port}"
    assert staging.verify_allow_list == f"127.0.0.1:{port}"
    assert staging.health_url_template.startswith(f"http://127.0.0.1:{port}/_services/")
    check_urls = list(
        Check.objects.filter(project__slug="acme-shop")
        .exclude(kind=Check.Kind.SUITE)
        .values_list("url", flat=True)
    )
    # HTTP checks of the services, and the TCP probe of the cluster's port; a heartbeat has none.
    following = (f"http://127.0.0.1:{port}/", f"tcp://127.0.0.1:{port}")
    assert check_urls and all(url.startswith(following) for url in check_urls if url)
    # The Procfile's own sim line, run as honcho runs it: by a shell, venv's bin first on PATH.
    options = procfile_sim_options()
    venv_bin = str(ROOT / ".venv" / "bin")
    sim = subprocess.Popen(
        ["sh", "-c", "exec " + procfile_command("sim")],
        cwd=ROOT,
        env=_child_env(SIM_PORT=str(port), PATH=f"{venv_bin}:{os.environ['PATH']}"),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, proc=sim)
        health = httpx.get(
            f"http://127.0.0.1:{port}/_services/acme-shop-staging/storefront-web/health"
        )
        assert health.json()["version"] == "1.3.0"
        listed = httpx.get(
            f"http://127.0.0.1:{port}/apis/apps/v1/namespaces/acme-shop-production/deployments"
        ).json()
        assert len(listed["items"]) == 8
        # A "bad" tag must fail on the cluster's progress deadline (ProgressDeadlineExceeded,
        # as a real cluster says it), so the deadline comes well before the demo's own rollout
        # timeout, and well after a normal rollout's duration.
        deadlines = {item["spec"]["progressDeadlineSeconds"] for item in listed["items"]}
        assert deadlines == {int(options["--progress-deadline-seconds"])}
        [deadline] = deadlines
        assert float(options["--rollout-seconds"]) * 2 < deadline
        assert deadline * 3 <= staging.rollout_timeout_seconds
    finally:
        stop_process(sim)
    assert "simcluster: Kubernetes API at" in sim.stdout.read()
