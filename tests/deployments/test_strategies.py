"""Strategies against real servers on 127.0.0.1: Kubernetes through the official client to the
simulated cluster (credentials, kubeconfig, faults), the webhook with its signature, and the
pure rules they rely on (kubectl's rollout verdict, image tags, kubeconfig screening)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from deployments import runner
from deployments.models import DeployedVersion, Deployment
from deployments.strategies import KubernetesStrategy, ServicePlan, StrategyError
from deployments.strategies.kubernetes import (
    parse_kubeconfig,
    rollout_status,
    tag_for_version,
    with_tag,
)
from deployments.strategies.webhook import SIGNATURE_HEADER, sign, verify_signature


class NullReporter:
    def __init__(self) -> None:
        self.progress_seen: list[tuple] = []
        self.lines: list[str] = []

    def progress(self, plan, desired, updated, available):  # noqa: ANN001, ANN201
        self.progress_seen.append((plan.service_name, desired, updated, available))

    def log(self, plan, text):  # noqa: ANN001, ANN201
        self.lines.append(text)

    def check(self):  # noqa: ANN201
        pass


# --- Pure rules ----------------------------------------------------------------------------------


def deployment(generation=2, observed=2, desired=2, updated=2, replicas=2, available=2, reason=""):  # noqa: ANN001, ANN201
    status = {
        "observedGeneration": observed,
        "updatedReplicas": updated,
        "replicas": replicas,
        "availableReplicas": available,
    }
    if reason:
        status["conditions"] = [{"type": "Progressing", "status": "False", "reason": reason}]
    return {
        "metadata": {"name": "web", "generation": generation},
        "spec": {"replicas": desired},
        "status": status,
    }


@pytest.mark.parametrize(
    ("obj", "min_generation", "verdict", "says"),
    [
        (deployment(observed=1), 0, "waiting", "spec update to be observed"),
        (deployment(), 3, "waiting", "spec update to be observed"),
        (deployment(updated=1), 0, "waiting", "1 out of 2 new replicas"),
        (deployment(replicas=3), 0, "waiting", "1 old replicas are pending termination"),
        (deployment(available=1), 0, "waiting", "1 of 2 updated replicas are available"),
        (deployment(reason="ProgressDeadlineExceeded", updated=1), 0, "failed", "deadline"),
        (deployment(), 2, "complete", "successfully rolled out"),
    ],
)
def test_rollout_verdict_follows_kubectl(obj, min_generation, verdict, says):  # noqa: ANN001
    result, message = rollout_status(obj, min_generation)
    assert result == verdict and says in message


def test_image_tags():
    assert with_tag("registry.example/web:1.3.0", "1.4.0") == "registry.example/web:1.4.0"
    assert with_tag("registry:5000/team/web", "1.4.0") == "registry:5000/team/web:1.4.0"
    assert with_tag("web@sha256:" + "a" * 64, "2") == "web:2"
    assert tag_for_version("1.4.0+build.7") == "1.4.0_build.7"


def kubeconfig(server: str, token: str, **user_extra) -> str:  # noqa: ANN003
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "sim", "cluster": {"server": server}}],
            "users": [{"name": "ci", "user": {"token": token, **user_extra}}],
            "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "ci"}}],
            "current-context": "sim",
        }
    )


def test_kubeconfigs_that_would_run_programs_or_read_files_are_refused():
    with pytest.raises(ValueError, match="run a program"):
        parse_kubeconfig(kubeconfig("https://k8s", "t", exec={"command": "/bin/sh"}))
    with pytest.raises(ValueError, match="Inline"):
        parse_kubeconfig(kubeconfig("https://k8s", "t", **{"client-key": "/etc/key"}))
    with pytest.raises(ValueError, match="not valid YAML"):
        parse_kubeconfig("clusters: [")
    assert parse_kubeconfig(kubeconfig("https://k8s", "t"))["current-context"] == "sim"


BROKEN_KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: sim
  cluster: {server: "https://k8s.example:6443"}
users:
- name: ci
  user:
    token: "sekret-kube-token-0042
contexts: [{name: sim, context: {cluster: sim, user: ci}}]
"""


def test_a_kubeconfig_with_a_yaml_error_is_refused_without_quoting_it(personas):
    from django.core.exceptions import ValidationError

    from deployments import services
    from deployments.models import DeployTarget

    # PyYAML's own message quotes the offending line, token included.
    with pytest.raises(yaml.YAMLError, match="sekret-kube-token"):
        yaml.safe_load(BROKEN_KUBECONFIG)
    with pytest.raises(ValueError, match=r"not valid YAML \(line \d+, column \d+\)") as raised:
        parse_kubeconfig(BROKEN_KUBECONFIG)
    assert "sekret" not in str(raised.value)
    with pytest.raises(StrategyError) as refused:
        KubernetesStrategy(namespace="shop", kubeconfig=BROKEN_KUBECONFIG)
    assert "sekret" not in str(refused.value)
    with pytest.raises(ValidationError) as invalid:
        services.save_deploy_target(
            personas.admin,
            personas.membership(personas.admin),
            personas.staging,
            strategy="kubernetes",
            kubeconfig=BROKEN_KUBECONFIG,
        )
    assert "not valid YAML" in str(invalid.value.message_dict["kubeconfig"])
    assert "sekret" not in str(invalid.value)
    assert not DeployTarget.objects.filter(environment=personas.staging).exists()


def test_webhook_signature_round_trip():
    header = sign("s3cret", b'{"a":1}')
    assert verify_signature("s3cret", b'{"a":1}', header)
    assert not verify_signature("s3cret", b'{"a":2}', header)
    assert not verify_signature("other", b'{"a":1}', header)
    assert not verify_signature("s3cret", b'{"a":1}', sign("s3cret", b'{"a":1}', 1_000_000))


# --- Kubernetes against the simulated cluster --------------------------------------------------


def test_kubernetes_with_a_kubeconfig_and_a_required_token(start_sim):
    sim = start_sim(rollout_seconds=0.2, token="right-token")
    sim.add_deployment("shop", "web", "registry.example/web:1.3.0")
    wrong = KubernetesStrategy(namespace="shop", kubeconfig=kubeconfig(sim.url, "wrong"))
    with pytest.raises(StrategyError, match="refused the credentials"):
        wrong.snapshot([ServicePlan("web", 1, "web", "1.4.0")])
    wrong.close()
    strategy = KubernetesStrategy(namespace="shop", kubeconfig=kubeconfig(sim.url, "right-token"))
    plans = [ServicePlan("web", 1, "web", "1.4.0"), ServicePlan("gone", 1, "gone", "1.4.0")]
    snapshot = strategy.snapshot(plans)
    assert snapshot.outcomes["web"].ok and not snapshot.outcomes["gone"].ok
    assert "does not exist" in snapshot.outcomes["gone"].message
    assert yaml.safe_load(snapshot.document)["items"][0]["metadata"]["name"] == "web"
    # Transient API errors are retried.
    sim.fail_next(503, times=2, method="PATCH")
    reporter = NullReporter()
    applied = strategy.apply(plans[:1], reporter)
    assert applied["web"].ok, applied
    waited = strategy.wait(plans[:1], reporter, timeout=10)
    assert waited["web"].ok and waited["web"].facts["version_after"] == "1.4.0"
    assert reporter.progress_seen[-1] == ("web", 2, 2, 2)
    # Applying again (a redelivered job snapshots again) changes nothing: no new generation.
    generation = sim.get("deployments", "shop", "web")["metadata"]["generation"]
    strategy.snapshot(plans[:1])
    assert "already runs" in strategy.apply(plans[:1], reporter)["web"].message
    assert sim.get("deployments", "shop", "web")["metadata"]["generation"] == generation
    strategy.close()


def test_kubernetes_wait_times_out_with_the_last_state(start_sim):
    sim = start_sim(rollout_seconds=20)
    sim.add_deployment("shop", "web", "registry.example/web:1.3.0")
    strategy = KubernetesStrategy(namespace="shop", api_url=sim.url, token="t")
    plans = [ServicePlan("web", 1, "web", "1.4.0")]
    strategy.snapshot(plans)
    strategy.apply(plans, NullReporter())
    started = time.monotonic()
    outcome = strategy.wait(plans, NullReporter(), timeout=1.5)["web"]
    assert not outcome.ok and "did not finish rolling out within 1.5 s" in outcome.message
    assert time.monotonic() - started < 5
    strategy.close()


# --- Webhook -------------------------------------------------------------------------------------


class Receiver:
    """A deploy hook on 127.0.0.1 that checks signatures, 'deploys' and serves health."""

    def __init__(self, secret: str) -> None:
        receiver = self
        self.secret = secret
        self.requests: list[dict] = []
        self.versions: dict[str, str] = {}
        self.polls: dict[str, int] = {}
        # (service, version) pairs whose health endpoint answers 503.
        self.broken: set[tuple[str, str]] = set()
        self.polls_until_done = 2

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # noqa: ANN002, ANN202
                pass

            def _answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802, ANN202
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if not verify_signature(receiver.secret, body, self.headers[SIGNATURE_HEADER]):
                    return self._answer(401, {"error": "bad signature"})
                payload = json.loads(body)
                receiver.requests.append(payload)
                for service in payload["services"]:
                    receiver.versions[service["name"]] = service["version"]
                return self._answer(
                    202, {"status_url": f"{receiver.url}/status/{payload['delivery']}"}
                )

            def do_GET(self):  # noqa: N802, ANN202
                if self.path.startswith("/status/"):
                    if not verify_signature(receiver.secret, b"", self.headers[SIGNATURE_HEADER]):
                        return self._answer(401, {})
                    n = receiver.polls[self.path] = receiver.polls.get(self.path, 0) + 1
                    if n < receiver.polls_until_done:
                        return self._answer(200, {"status": "running", "message": "rolling"})
                    return self._answer(200, {"status": "succeeded"})
                name = self.path.strip("/").split("/")[1]
                version = receiver.versions.get(name, "1.3.0")
                if (name, version) in receiver.broken:
                    return self._answer(503, {"status": "unhealthy", "version": version})
                return self._answer(200, {"status": "healthy", "version": version})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_deploys_tier_by_tier_and_verifies(transactional_db, personas):
    from deployments import services

    receiver = Receiver("hook-secret-1")
    try:
        port = receiver.server.server_address[1]
        services.save_deploy_target(
            personas.admin,
            personas.membership(personas.admin),
            personas.staging,
            strategy="webhook",
            webhook_url=receiver.url + "/deploy",
            webhook_secret="hook-secret-1",
            health_url_template=receiver.url + "/health/{service}",
            verify_allow_list=f"127.0.0.1:{port}",
            verify_timeout_seconds=5,
            rollout_timeout_seconds=10,
        )
        from .jobs_helpers import approved_release

        release = approved_release(personas)
        deployment, _ = services.start_deployment(
            personas.member, personas.membership(personas.member), release, personas.staging
        )
        assert runner.run(deployment.pk, "in-process@test") == "succeeded"
    finally:
        receiver.stop()
    assert [r["tier"] for r in receiver.requests] == [1, 2]
    assert receiver.requests[0]["services"] == [{"name": "api", "version": "1.4.0"}]
    assert receiver.requests[0]["delivery"] == f"{deployment.pk}-1-deploy"
    done = Deployment.objects.get(pk=deployment.pk)
    assert set(done.steps.values_list("kind", "status")) == {
        ("snapshot", "succeeded"),
        ("apply", "succeeded"),
        ("wait", "succeeded"),
        ("verify", "succeeded"),
    }
    assert set(
        DeployedVersion.objects.filter(environment=personas.staging).values_list(
            "version", flat=True
        )
    ) == {"1.4.0"}


def test_snapshot_yaml_reads_back_unchanged():
    from deployments.strategies.kubernetes import to_yaml

    document = {
        "apiVersion": "v1",
        "items": [
            {
                "metadata": {"name": "web", "annotations": {"a/b": "yes", "note": "x: y # z"}},
                "spec": {"replicas": 2, "template": {"spec": {"containers": [{"args": []}]}}},
                "status": {"conditions": [{"type": "Available", "status": "True"}], "n": None},
            },
            [1.5, "0755", "", "ü\nnew line", True, {}],
        ],
    }
    assert yaml.safe_load(to_yaml(document)) == document


def test_webhook_rolls_back_to_the_versions_that_ran_before(transactional_db, personas):
    from deployments import services
    from releasecenter.models import Service

    from .jobs_helpers import approved_release, set_auto_rollback

    for service in Service.objects.filter(project=personas.project):
        DeployedVersion.objects.create(
            environment=personas.staging, service=service, version="1.3.0"
        )
    receiver = Receiver("hook-secret-2")
    receiver.broken.add(("web", "1.4.0"))
    receiver.polls_until_done = 1
    try:
        services.save_deploy_target(
            personas.admin,
            personas.membership(personas.admin),
            personas.staging,
            strategy="webhook",
            webhook_url=receiver.url + "/deploy",
            webhook_secret="hook-secret-2",
            health_url_template=receiver.url + "/health/{service}",
            verify_allow_list=f"127.0.0.1:{receiver.server.server_address[1]}",
            verify_timeout_seconds=1,
            rollout_timeout_seconds=10,
        )
        set_auto_rollback(personas, personas.staging, True)
        deployment, _ = services.start_deployment(
            personas.member,
            personas.membership(personas.member),
            approved_release(personas),
            personas.staging,
        )
        assert runner.run(deployment.pk, "in-process@test") == "rolling back: succeeded"
    finally:
        receiver.stop()
    actions = [(r["action"], r["tier"], r["services"]) for r in receiver.requests]
    # Verification of tier 2 failed; the rollback went the other way round: web, then api.
    assert actions == [
        ("deploy", 1, [{"name": "api", "version": "1.4.0"}]),
        ("deploy", 2, [{"name": "web", "version": "1.4.0"}]),
        ("rollback", 2, [{"name": "web", "version": "1.3.0"}]),
        ("rollback", 1, [{"name": "api", "version": "1.3.0"}]),
    ]
    assert Deployment.objects.get(pk=deployment.pk).status == "rolled_back"
    assert receiver.versions == {"api": "1.3.0", "web": "1.3.0"}
