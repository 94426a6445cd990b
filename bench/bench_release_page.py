"""Release page: 4 environments, 300 checklist items, 10 sign-offs. Goal: server p95 <= 100 ms.

Builds its own PostgreSQL database (DATABASE_URL, default rc_bench_release: dropped and made
again), one release whose four environments each get a 75-item runbook with severity gates and
whose production and pre-production need sign-offs (10 given), then renders the release page
through Django's request handler (the server's work: middleware, views, queries, templates) N
times and prints latency percentiles and the query count.

    .venv/bin/python bench/bench_release_page.py [--requests 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchdb import recreate_database  # noqa: E402  bench/ is first on sys.path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "releasecenter.settings_test")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rc_bench_release")


def runbook(env: str, items: int) -> str:
    lines = [f"# {env} runbook"]
    severities = ["NO-GO", "CONDITIONAL", "WARNING", ""]
    for n, severity in enumerate(severities):
        # Spread the items over the sections, the remainder going to the first ones.
        count = items // len(severities) + (1 if n < items % len(severities) else 0)
        lines += ["", f"## Section {n} {f'({severity})' if severity else ''}"]
        lines += [f"- [ ] {env} step {n}.{i}" for i in range(count)]
    return "\n".join(lines) + "\n"


def build():  # noqa: ANN201
    from django.contrib.auth import get_user_model

    from checklists import services as checklists
    from checklists.models import RunItem
    from deployments import services
    from releasecenter import services as core
    from releasecenter.models import Membership

    User = get_user_model()  # noqa: N806
    admin = User.objects.create_user("bench-admin", password="x")
    project = core.create_project(admin, slug="bench-release", name="Bench release")
    admin_m = Membership.objects.get(user=admin, project=project)
    envs = []
    for n, (name, kind) in enumerate(
        [
            ("dev", "staging"),
            ("staging", "staging"),
            ("preprod", "production"),
            ("production", "production"),
        ]
    ):
        env = core.create_environment(admin, admin_m, name=name, kind=kind, order=(n + 1) * 10)
        template = checklists.import_runbook(admin, project, runbook(name, 75)).template
        services.update_policy(admin, admin_m, env, checklist_templates=[template])
        envs.append(env)
    roles = [f"Role {i}" for i in range(5)]
    for env in envs[2:]:
        services.set_signoff_requirements(admin, admin_m, env, [(r, 1) for r in roles])
    people = []
    for i in range(10):
        user = User.objects.create_user(f"signer{i}", password="x")
        core.add_member(
            admin, admin_m, username=user.username, role="engineer", signoff_capacities=roles
        )
        people.append((user, Membership.objects.get(user=user, project=project)))
    release = services.create_release(admin, admin_m, version="9.9.9", commit_sha="abcdef123456")
    for i, (user, membership) in enumerate(people):
        env = envs[2 + i // 5]
        services.sign_off(
            user, membership, release, environment=env.name, role=roles[i % 5], decision="approve"
        )
    items = RunItem.objects.filter(run__release_targets__release=release)
    for row in list(items[:120]):
        checklists.tick(admin, row, expected_version=None)
    return admin, project, release, items.count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    recreate_database(os.environ["DATABASE_URL"])

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    call_command("migrate", verbosity=0)
    admin, project, release, item_count = build()
    client = Client(HTTP_HOST="localhost")
    client.force_login(admin)
    url = f"/p/{project.slug}/releases/{release.pk}/"
    for _ in range(10):  # warm caches, templates and connections
        assert client.get(url).status_code == 200
    queries = []

    def count(execute, sql, params, many, context):  # noqa: ANN001, ANN202
        queries.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        assert client.get(url).status_code == 200
    samples = []
    for _ in range(args.requests):
        started = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    samples.sort()
    p95 = samples[int(len(samples) * 0.95) - 1]
    print(f"release page: 4 environments, {item_count} checklist items, 10 sign-offs")
    print(f"requests: {len(samples)}  queries per page: {len(queries)}")
    print(f"latency ms: p50 {statistics.median(samples):.1f}  p95 {p95:.1f}  max {samples[-1]:.1f}")
    print(f"goal p95 <= 100 ms: {'met' if p95 <= 100 else 'NOT met'}")


if __name__ == "__main__":
    main()
