"""The simulated cluster, driven through the official kubernetes client over real HTTP."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from deployments.sim import SimCluster, serve
from deployments.sim.patch import json_patch, strategic_merge

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "shop"
REVISION = "deployment.kubernetes.io/revision"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def cluster() -> Iterator[SimCluster]:
    sim = serve(rollout_seconds=0.3, progress_deadline_seconds=1)
    yield sim
    sim.stop()


def apps_api(url: str, token: str | None = None) -> client.AppsV1Api:
    config = client.Configuration(host=url)
    config.api_key = {"authorization": f"Bearer {token or 'any'}"}
    return client.AppsV1Api(client.ApiClient(config))


@pytest.fixture(scope="module")
def apps(cluster: SimCluster) -> client.AppsV1Api:
    return apps_api(cluster.url)


@pytest.fixture
def name() -> str:
    return f"svc{next(_names)}"


def http() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=5)


def rollout_status(
    apps: client.AppsV1Api,
    name: str,
    namespace: str = NAMESPACE,
    timeout: float = 10,
    since: str | None = None,
) -> tuple[str, list[client.V1Deployment]]:
    """Wait as ``kubectl rollout status`` does: get, then watch from that resourceVersion.

    With ``since`` (a resourceVersion) it skips the get and watches every event after it.
    Returns ("complete" | "ProgressDeadlineExceeded", every state seen on the way).
    """
    if since is None:
        seen = [apps.read_namespaced_deployment(name, namespace)]
        verdict = rollout_verdict(seen[0])
        version = seen[0].metadata.resource_version
    else:
        seen, verdict, version = [], None, since
    deadline = time.monotonic() + timeout
    while verdict is None and time.monotonic() < deadline:
        stream = watch.Watch()
        for event in stream.stream(
            apps.list_namespaced_deployment,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=version,
            timeout_seconds=max(1, int(deadline - time.monotonic())),
        ):
            assert event["type"] == "MODIFIED"
            seen.append(event["object"])
            version = event["object"].metadata.resource_version
            verdict = rollout_verdict(event["object"])
            if verdict is not None:
                stream.stop()
    assert verdict is not None, f"rollout of {name} did not finish in {timeout}s"
    return verdict, seen


def rollout_verdict(deployment: client.V1Deployment) -> str | None:
    """kubectl's DeploymentStatusViewer: None while the rollout is still under way."""
    status = deployment.status
    if deployment.metadata.generation > (status.observed_generation or 0):
        return None
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return "ProgressDeadlineExceeded"
    updated = status.updated_replicas or 0
    if updated < deployment.spec.replicas:
        return None
    if (status.replicas or 0) > updated:
        return None
    if (status.available_replicas or 0) < updated:
        return None
    return "complete"


def set_image(apps: client.AppsV1Api, name: str, image: str) -> client.V1Deployment:
    """What ``kubectl set image deployment/<name> <name>=<image>`` sends."""
    body = {"spec": {"template": {"spec": {"containers": [{"name": name, "image": image}]}}}}
    return apps.patch_namespaced_deployment(name, NAMESPACE, body)


def replicasets(apps: client.AppsV1Api, name: str) -> dict[str, client.V1ReplicaSet]:
    """The Deployment's ReplicaSets by revision, found the way kubectl finds them."""
    listed = apps.list_namespaced_replica_set(NAMESPACE, label_selector=f"app={name}").items
    return {rs.metadata.annotations[REVISION]: rs for rs in listed}


def condition(deployment: client.V1Deployment, ctype: str) -> client.V1DeploymentCondition:
    return next(c for c in deployment.status.conditions if c.type == ctype)


def test_list_and_get_return_rolled_out_deployments(cluster, apps, name):
    cluster.add_deployment(NAMESPACE, name, "registry.example/web:1.0.0", replicas=3)
    cluster.add_deployment("other", name, "registry.example/web:0.9.0")

    listed = apps.list_namespaced_deployment(NAMESPACE)
    assert name in [d.metadata.name for d in listed.items]
    assert all(d.metadata.namespace == NAMESPACE for d in listed.items)
    everywhere = apps.list_deployment_for_all_namespaces(field_selector=f"metadata.name={name}")
    assert sorted(d.metadata.namespace for d in everywhere.items) == ["other", NAMESPACE]

    deployment = apps.read_namespaced_deployment(name, NAMESPACE)
    assert int(listed.metadata.resource_version) >= int(deployment.metadata.resource_version)
    assert deployment.metadata.uid and deployment.metadata.creation_timestamp
    assert deployment.metadata.generation == deployment.status.observed_generation == 1
    assert deployment.metadata.annotations[REVISION] == "1"
    assert deployment.spec.selector.match_labels == {"app": name}
    assert deployment.spec.progress_deadline_seconds == 1
    assert deployment.spec.template.spec.containers[0].image == "registry.example/web:1.0.0"
    status = deployment.status
    assert (status.replicas, status.updated_replicas, status.ready_replicas) == (3, 3, 3)
    assert status.available_replicas == 3
    assert condition(deployment, "Available").status == "True"
    assert condition(deployment, "Progressing").reason == "NewReplicaSetAvailable"


def test_unknown_deployment_is_a_404_status(apps):
    with pytest.raises(ApiException) as raised:
        apps.read_namespaced_deployment("nope", NAMESPACE)
    assert raised.value.status == 404
    body = json.loads(raised.value.body)
    assert body["kind"] == "Status"
    assert (body["reason"], body["code"]) == ("NotFound", 404)
    assert body["message"] == 'deployments.apps "nope" not found'

    with pytest.raises(ApiException) as raised:
        apps.read_namespaced_replica_set("nope", NAMESPACE)
    assert raised.value.status == 404


def test_image_patch_rolls_out_a_new_replicaset_step_by_step(cluster, apps, name):
    cluster.add_deployment(
        NAMESPACE, name, "web:1.0", sidecars=[{"name": "proxy", "image": "envoy:1.29"}]
    )
    patched = set_image(apps, name, "web:1.1")

    assert patched.metadata.generation == 2
    containers = {c.name: c.image for c in patched.spec.template.spec.containers}
    assert containers == {name: "web:1.1", "proxy": "envoy:1.29"}

    verdict, seen = rollout_status(apps, name, since=patched.metadata.resource_version)

    assert verdict == "complete"
    final = seen[-1]
    assert final.status.observed_generation == final.metadata.generation == 2
    assert condition(final, "Progressing").reason == "NewReplicaSetAvailable"
    assert final.metadata.annotations[REVISION] == "2"
    # Each step was its own event: the new pods came one at a time, with a surge pod.
    assert all(d.status.observed_generation == 2 for d in seen)
    updated = [d.status.updated_replicas or 0 for d in seen]
    assert updated == sorted(updated) and updated[0] == 0 and 1 in updated and updated[-1] == 2
    assert any(d.status.replicas == 3 for d in seen)
    assert all((d.status.available_replicas or 0) >= 2 for d in seen)
    versions = [int(d.metadata.resource_version) for d in seen]
    assert versions == sorted(set(versions))

    sets = replicasets(apps, name)
    assert sorted(sets) == ["1", "2"]
    new, old = sets["2"], sets["1"]
    pod_hash = new.metadata.labels["pod-template-hash"]
    assert new.metadata.name == f"{name}-{pod_hash}"
    assert new.spec.selector.match_labels == {"app": name, "pod-template-hash": pod_hash}
    owner = new.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid) == ("Deployment", name, final.metadata.uid)
    assert owner.controller is True
    assert (new.status.ready_replicas, old.spec.replicas) == (2, 0)
    assert apps.read_namespaced_replica_set(new.metadata.name, NAMESPACE).metadata.uid


def test_bad_image_ends_in_progress_deadline_exceeded(cluster, apps, name):
    cluster.add_deployment(NAMESPACE, name, "web:1.0")
    set_image(apps, name, "web:1.1-bad")

    verdict, seen = rollout_status(apps, name)

    assert verdict == "ProgressDeadlineExceeded"
    progressing = condition(seen[-1], "Progressing")
    assert progressing.status == "False"
    assert progressing.message.endswith("has timed out progressing.")
    # The old pods keep serving the old version.
    assert seen[-1].status.available_replicas == 2
    assert seen[-1].status.updated_replicas == 1
    with http() as session:
        assert session.get(cluster.health_url(NAMESPACE, name)).json()["version"] == "1.0"


def test_rollback_reuses_the_previous_replicaset_with_a_new_revision(cluster, apps, name):
    cluster.add_deployment(NAMESPACE, name, "web:1.0")
    set_image(apps, name, "web:2.0")
    assert rollout_status(apps, name)[0] == "complete"
    previous = replicasets(apps, name)["1"]

    # What ``kubectl rollout undo`` sends: the old ReplicaSet's template minus its hash label.
    template = apps.api_client.sanitize_for_serialization(previous.spec.template)
    del template["metadata"]["labels"]["pod-template-hash"]
    apps.patch_namespaced_deployment(
        name, NAMESPACE, [{"op": "replace", "path": "/spec/template", "value": template}]
    )
    verdict, seen = rollout_status(apps, name)

    assert verdict == "complete"
    assert seen[-1].spec.template.spec.containers[0].image == "web:1.0"
    assert seen[-1].metadata.annotations[REVISION] == "3"
    sets = replicasets(apps, name)
    assert sorted(sets) == ["2", "3"]
    assert sets["3"].metadata.name == previous.metadata.name
    assert sets["3"].metadata.annotations["deployment.kubernetes.io/revision-history"] == "1"
    assert sets["3"].status.ready_replicas == 2 and sets["2"].spec.replicas == 0
    with http() as session:
        assert session.get(cluster.health_url(NAMESPACE, name)).json()["version"] == "1.0"


def test_rollback_of_a_stuck_rollout_by_strategic_patch(cluster, apps, name):
    cluster.add_deployment(NAMESPACE, name, "web:1.0")
    set_image(apps, name, "web:2.0-bad")
    time.sleep(0.2)  # the surge pod of the bad ReplicaSet exists, never ready

    set_image(apps, name, "web:1.0")
    verdict, seen = rollout_status(apps, name)

    assert verdict == "complete"
    assert seen[-1].metadata.annotations[REVISION] == "3"
    sets = replicasets(apps, name)
    assert sorted(sets) == ["2", "3"]
    assert sets["2"].spec.template.spec.containers[0].image == "web:2.0-bad"
    assert sets["2"].spec.replicas == 0
    assert condition(seen[-1], "Progressing").reason == "NewReplicaSetAvailable"


def test_health_endpoint_reports_the_available_version(cluster, apps, name):
    cluster.add_deployment(NAMESPACE, name, "registry.example:5000/web:3.2.1")
    with http() as session:
        healthy = session.get(cluster.health_url(NAMESPACE, name))
        assert healthy.status_code == 200
        assert healthy.json()["status"] == "healthy"
        assert healthy.json()["version"] == "3.2.1"

        set_image(apps, name, "registry.example:5000/web:3.3.0-unhealthy")
        assert rollout_status(apps, name)[0] == "complete"
        unhealthy = session.get(cluster.service_url(NAMESPACE, name) + "/healthz")
        assert unhealthy.status_code == 503
        assert unhealthy.json()["status"] == "unhealthy"
        assert unhealthy.json()["version"] == "3.3.0-unhealthy"

        assert session.get(cluster.health_url(NAMESPACE, "nope")).status_code == 404


def test_watch_replays_events_newer_than_a_resource_version(cluster, apps, name):
    cluster.add_deployment(NAMESPACE, name, "web:1.0")
    start = apps.read_namespaced_deployment(name, NAMESPACE).metadata.resource_version
    set_image(apps, name, "web:1.1")
    assert rollout_status(apps, name)[0] == "complete"

    events = list(
        watch.Watch().stream(
            apps.list_namespaced_deployment,
            NAMESPACE,
            field_selector=f"metadata.name={name}",
            resource_version=start,
            timeout_seconds=1,
        )
    )

    assert [e["type"] for e in events] == ["MODIFIED"] * len(events)
    versions = [int(e["object"].metadata.resource_version) for e in events]
    assert versions == sorted(versions) and versions[0] > int(start)
    assert events[0]["object"].metadata.generation == 2
    assert rollout_verdict(events[-1]["object"]) == "complete"
    assert {e["object"].metadata.name for e in events} == {name}


def test_watch_without_resource_version_starts_with_the_current_objects(cluster, apps, name):
    cluster.add_deployment(NAMESPACE, name, "web:1.0")
    events = list(
        watch.Watch().stream(
            apps.list_namespaced_replica_set,
            NAMESPACE,
            label_selector=f"app={name}",
            timeout_seconds=1,
        )
    )
    assert [(e["type"], e["object"].metadata.annotations[REVISION]) for e in events] == [
        ("ADDED", "1")
    ]


def test_watch_from_a_compacted_resource_version_is_410_gone():
    with serve(rollout_seconds=0, history_size=3) as small:
        apps = apps_api(small.url)
        small.add_deployment(NAMESPACE, "web", "web:1.0")
        for minor in range(1, 4):
            set_image(apps, "web", f"web:1.{minor}")
        with pytest.raises(ApiException) as raised:
            for _ in watch.Watch().stream(
                apps.list_namespaced_deployment, NAMESPACE, resource_version="1", timeout_seconds=1
            ):
                pass
        assert raised.value.status == 410


def test_patch_dialects_and_preconditions(cluster, apps, name):
    cluster.add_deployment(
        NAMESPACE, name, "web:1.0", sidecars=[{"name": "proxy", "image": "envoy:1.29"}]
    )
    before = apps.read_namespaced_deployment(name, NAMESPACE)

    labelled = apps.patch_namespaced_deployment(
        name, NAMESPACE, {"metadata": {"labels": {"team": "checkout"}}}
    )
    assert labelled.metadata.labels["team"] == "checkout"
    assert labelled.metadata.generation == 1  # metadata is not spec

    merged = apps.patch_namespaced_deployment(
        name,
        NAMESPACE,
        {"spec": {"template": {"spec": {"containers": [{"name": name, "image": "web:1.1"}]}}}},
        _content_type="application/merge-patch+json",
    )
    assert [c.name for c in merged.spec.template.spec.containers] == [name]  # list replaced
    assert merged.metadata.generation == 2

    scaled = apps.patch_namespaced_deployment(
        name, NAMESPACE, [{"op": "replace", "path": "/spec/replicas", "value": 3}]
    )
    assert scaled.spec.replicas == 3

    with pytest.raises(ApiException) as raised:
        apps.patch_namespaced_deployment(
            name, NAMESPACE, {"metadata": {"resourceVersion": before.metadata.resource_version}}
        )
    assert raised.value.status == 409

    with pytest.raises(ApiException) as raised:
        apps.patch_namespaced_deployment(
            name, NAMESPACE, {"spec": {"template": {"spec": {"containers": None}}}}
        )
    assert raised.value.status == 422
    assert rollout_status(apps, name)[0] == "complete"
    assert apps.read_namespaced_deployment(name, NAMESPACE).status.available_replicas == 3


def test_create_and_delete_through_the_api(cluster, apps, name):
    body = client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels={"app": name}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": name}),
                spec=client.V1PodSpec(containers=[client.V1Container(name=name, image="web:1")]),
            ),
        ),
    )
    created = apps.create_namespaced_deployment(NAMESPACE, body)
    assert created.metadata.generation == 1
    assert rollout_status(apps, name)[0] == "complete"
    with pytest.raises(ApiException) as raised:
        apps.create_namespaced_deployment(NAMESPACE, body)
    assert raised.value.status == 409

    version = apps.read_namespaced_deployment(name, NAMESPACE).metadata.resource_version
    apps.delete_namespaced_deployment(name, NAMESPACE)
    events = list(
        watch.Watch().stream(
            apps.list_namespaced_deployment,
            NAMESPACE,
            field_selector=f"metadata.name={name}",
            resource_version=version,
            timeout_seconds=1,
        )
    )
    assert [e["type"] for e in events] == ["DELETED"]
    assert apps.list_namespaced_replica_set(NAMESPACE, label_selector=f"app={name}").items == []


def test_a_configured_token_is_required():
    with serve(rollout_seconds=0, token="s3cret") as guarded:
        with pytest.raises(ApiException) as raised:
            apps_api(guarded.url, token="wrong").list_namespaced_deployment(NAMESPACE)
        assert raised.value.status == 401
        assert apps_api(guarded.url, token="s3cret").list_namespaced_deployment(NAMESPACE)


def test_injected_faults_hit_the_next_requests_only(cluster, apps, name):
    cluster.add_deployment(NAMESPACE, name, "web:1.0")
    cluster.fail_next(503, path_prefix="/apis/apps")
    with pytest.raises(ApiException) as raised:
        apps.read_namespaced_deployment(name, NAMESPACE)
    assert raised.value.status == 503
    assert apps.read_namespaced_deployment(name, NAMESPACE).metadata.name == name


def test_discovery_and_version(cluster):
    config = client.Configuration(host=cluster.url)
    api_client = client.ApiClient(config)
    assert client.VersionApi(api_client).get_code().major == "1"
    groups = client.ApisApi(api_client).get_api_versions().groups
    assert [g.name for g in groups] == ["apps"]
    resources = client.AppsV1Api(api_client).get_api_resources().resources
    assert {"deployments", "replicasets"} <= {r.name for r in resources}


def test_strategic_merge_patch_directives():
    original = {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}
    assert strategic_merge(original, {"containers": [{"name": "b", "$patch": "delete"}]}) == {
        "containers": [{"name": "a", "image": "a:1"}]
    }
    assert strategic_merge(original, {"containers": [{"name": "c", "image": "c:1"}]})["containers"][
        -1
    ] == {"name": "c", "image": "c:1"}
    replaced = strategic_merge({"x": {"y": 1, "z": 2}}, {"x": {"$patch": "replace", "y": 3}})
    assert replaced == {"x": {"y": 3}}
    assert json_patch({"a": [1, 2]}, [{"op": "add", "path": "/a/-", "value": 3}]) == {
        "a": [1, 2, 3]
    }


def test_command_line_serves_seeded_deployments_until_sigterm():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deployments.sim",
            "--port",
            "0",
            "--rollout-seconds",
            "0",
            "--deployment",
            "shop/web=registry.example/web:4.0,3",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        banner = process.stdout.readline()
        url = banner.split(" at ", 1)[1].split()[0]
        health = process.stdout.readline().split()[-1]
        assert health == f"{url}/_services/shop/web/health"
        with http() as session:
            assert session.get(health).json()["version"] == "4.0"
        assert apps_api(url).read_namespaced_deployment("web", "shop").spec.replicas == 3
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
