"""How much a rollout costs through the simulated cluster when the rollout itself costs nothing.

With rollout_seconds=0 every millisecond between "patch the image" and "watch says the
rollout is complete" is orchestration overhead: HTTP, JSON, the kubernetes client's models,
the controller and the watch fan-out. Measured with the official client, one service after
another and then many at once.

    .venv/bin/python bench/bench_simcluster.py [--services 300] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client, watch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployments.sim import serve  # noqa: E402

NAMESPACE = "bench"
BUDGET_MS = 20.0


def apps_api(url: str) -> client.AppsV1Api:
    config = client.Configuration(host=url)
    config.api_key = {"authorization": "Bearer bench"}
    return client.AppsV1Api(client.ApiClient(config))


def complete(deployment: client.V1Deployment) -> bool:
    status = deployment.status
    updated = status.updated_replicas or 0
    return (
        deployment.metadata.generation <= (status.observed_generation or 0)
        and updated >= deployment.spec.replicas
        and (status.replicas or 0) <= updated
        and (status.available_replicas or 0) >= updated
    )


def roll_out(apps: client.AppsV1Api, name: str, image: str) -> float:
    """Patch the image, watch until complete; seconds taken."""
    started = time.perf_counter()
    body = {"spec": {"template": {"spec": {"containers": [{"name": name, "image": image}]}}}}
    patched = apps.patch_namespaced_deployment(name, NAMESPACE, body)
    stream = watch.Watch()
    for event in stream.stream(
        apps.list_namespaced_deployment,
        NAMESPACE,
        field_selector=f"metadata.name={name}",
        resource_version=patched.metadata.resource_version,
        timeout_seconds=30,
    ):
        if complete(event["object"]):
            stream.stop()
            return time.perf_counter() - started
    raise RuntimeError(f"{name} did not complete")


def report(label: str, seconds: list[float], wall: float, cpu: float) -> float:
    """Print latency figures; ``cpu`` is the process CPU time (client and server together)."""
    ms = sorted(s * 1000 for s in seconds)
    median = statistics.median(ms)
    p95 = ms[int(len(ms) * 0.95) - 1]
    print(
        f"{label:<26} n={len(ms):<4} median {median:6.2f} ms  p95 {p95:6.2f} ms  "
        f"max {ms[-1]:6.2f} ms  wall {wall:5.2f} s  {len(ms) / wall:6.1f} services/s  "
        f"CPU {cpu * 1000 / len(ms):5.2f} ms/service"
    )
    return median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=300)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    cluster = serve(rollout_seconds=0)
    try:
        names = [f"svc-{i:04d}" for i in range(args.services)]
        started = time.perf_counter()
        for name in names:
            cluster.add_deployment(NAMESPACE, name, f"registry.example/{name}:1.0.0", args.replicas)
        print(
            f"seeded {len(names)} deployments x {args.replicas} replicas "
            f"in {time.perf_counter() - started:.2f} s"
        )

        apps = apps_api(cluster.url)
        roundtrips = []
        for name in names[:100]:
            t0 = time.perf_counter()
            apps.read_namespaced_deployment(name, NAMESPACE)
            roundtrips.append(time.perf_counter() - t0)
        print(f"GET deployment round trip   median {statistics.median(roundtrips) * 1000:.2f} ms")

        started, cpu = time.perf_counter(), time.process_time()
        sequential = [roll_out(apps, name, f"registry.example/{name}:1.1.0") for name in names]
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        medians = [report("patch+watch, sequential", sequential, wall, cpu)]

        local = threading.local()

        def concurrent_rollout(name: str) -> float:
            if not hasattr(local, "apps"):
                local.apps = apps_api(cluster.url)
            return roll_out(local.apps, name, f"registry.example/{name}:1.2.0")

        started, cpu = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            parallel = list(pool.map(concurrent_rollout, names))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        label = f"patch+watch, {args.concurrency} at once"
        medians.append(report(label, parallel, wall, cpu))
    finally:
        cluster.stop()

    verdict = "within" if medians[0] <= BUDGET_MS else "OVER"
    print(
        f"sequential median {medians[0]:.2f} ms per service: {verdict} the {BUDGET_MS:g} ms budget"
    )
    return 0 if medians[0] <= BUDGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
