"""The address guard end to end through the Django layer, with real sockets and no spy.

The cases named ``netns_django_*`` run in a subprocess inside a fresh network namespace that has
only ``lo``, under an audit hook that aborts any socket connect to a non-loopback address, so
even a broken guard could not reach the metadata service or a private network. PostgreSQL is
reached over its unix socket (a file, so it is there in any namespace); Redis is left out.
Only ``test_netns_django_suite`` collects them: a normal run neither executes nor skips them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitoring.lib.testing import LoopbackOnlyAuditHook, TargetServer

NETNS_ENV = "RC_MONITORING_DJANGO_NETNS"
INSIDE_NETNS = os.environ.get(NETNS_ENV) == "1"
INNER_CASES = 4
_hook: LoopbackOnlyAuditHook | None = None


def test_netns_django_suite() -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("needs unshare(1) and ip(8) (util-linux and iproute2)")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.fail(f"cannot create a network namespace: {probe.stderr.decode().strip()}")
    socket_dir = Path("/var/run/postgresql")
    if not any(socket_dir.glob(".s.PGSQL.*")):
        pytest.fail("PostgreSQL's unix socket is not in /var/run/postgresql")
    from django.conf import settings

    user = settings.DATABASES["default"].get("USER") or "postgres"
    # A database of this run's own: pytest-django makes test_<name> and drops it afterwards.
    name = f"rc_monitoring_netns_{os.getpid()}"
    root = Path(__file__).resolve().parents[2]
    command = [
        "unshare",
        "--net",
        "sh",
        "-c",
        'ip link set lo up && exec "$@"',
        "sh",
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-o",
        "python_functions=netns_django_*",
        "-k",
        "netns_django",
        str(Path(__file__).resolve()),
    ]
    completed = subprocess.run(
        command,
        cwd=root,
        env={
            **os.environ,
            NETNS_ENV: "1",
            "DATABASE_URL": f"postgres://{user}@/{name}",
            "REDIS_URL": "",
            "DJANGO_SETTINGS_MODULE": "releasecenter.settings_test",
        },
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    passed = re.search(r"(\d+) passed", output)
    assert passed is not None and int(passed.group(1)) == INNER_CASES, output
    assert "skipped" not in output, output


# --- inside the namespace ------------------------------------------------------------------


@pytest.fixture
def hook() -> LoopbackOnlyAuditHook:
    global _hook
    assert INSIDE_NETNS, "runs inside a loopback-only network namespace, via the suite above"
    if _hook is None:
        # Audit hooks cannot be removed; this process exists for these cases only.
        _hook = LoopbackOnlyAuditHook().install()
    _hook.refused.clear()
    return _hook


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


def _stored(personas, name: str, url: str, **fields):  # noqa: ANN001, ANN003, ANN202
    """A check written directly, as if the allow-list had been narrowed after it was saved."""
    from monitoring.models import Check

    return Check.objects.create(
        project=personas.project, environment=personas.staging, name=name, url=url, **fields
    )


def netns_django_api_runs_an_allowed_loopback_target(hook, api_client_for, personas, target):
    from .support import allow

    allow(personas.staging, f"127.0.0.1:{target.port}")
    client = api_client_for(personas.member)
    created = client.post(
        "/api/v1/projects/shop/checks/",
        {"environment": "staging", "name": "ok", "url": target.url("/ok")},
        format="json",
    )
    assert created.status_code == 201, created.content
    result = client.post(f"/api/v1/checks/{created.json()['id']}/run").json()
    assert result["passed"] is True and target.paths() == ["/ok"]
    assert hook.refused == []


def netns_django_refused_destinations_never_connect(hook, api_client_for, personas, target):
    from .support import allow

    allow(personas.staging, "")
    port = target.port
    cases = {
        "http://169.254.169.254/latest/meta-data/": "link-local",
        "http://10.0.0.1/": "private",
        f"http://127.0.0.1:{port}/ok": "loopback",
        f"http://[::1]:{port}/ok": "loopback",
        f"http://0x7f000001:{port}/ok": "loopback",
        f"http://2130706433:{port}/ok": "loopback",
        f"http://[::ffff:127.0.0.1]:{port}/ok": "loopback",
        f"http://localhost:{port}/ok": "loopback",
    }
    client = api_client_for(personas.member)
    for index, (url, rule) in enumerate(cases.items()):
        check = _stored(personas, f"c{index}", url)
        result = client.post(f"/api/v1/checks/{check.pk}/run").json()
        assert result["passed"] is False, url
        assert result["failures"][0].get("rule") == rule, (url, result)
    assert target.paths() == []
    assert hook.refused == []


def netns_django_redirects_to_refused_addresses_are_not_followed(hook, personas, target):
    from monitoring import services

    from .support import allow

    allow(personas.staging, f"127.0.0.1:{target.port}")
    with TargetServer() as other:
        targets = [
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            other.url("/ok"),
        ]
        checks = [
            _stored(personas, f"r{i}", target.url(f"/redirect?to={to}"), follow_redirects=True)
            for i, to in enumerate(targets)
        ]
        outcomes = services.run_units(services.load_checks([c.pk for c in checks]), trigger="api")
        assert [o.failures[0].get("rule") for o in outcomes] == [
            "link-local",
            "private",
            "loopback",
        ]
        assert other.paths() == []
    assert target.paths() == ["/redirect"] * 3
    assert hook.refused == []


def netns_django_a_webhook_to_metadata_is_refused(hook, personas, target):
    from monitoring import notify
    from monitoring.models import EnvironmentMonitoring, Notification

    from .support import run

    # Written directly: saving it through the service would be refused at once.
    EnvironmentMonitoring.objects.create(
        environment=personas.staging,
        allow_list=f"127.0.0.1:{target.port}",
        webhook_url="http://169.254.169.254/hook",
    )
    down = _stored(
        personas, "down", target.url("/503"), assertions=[{"type": "status", "equals": 200}]
    )
    run(down, trigger="schedule")
    notification = Notification.objects.filter(status="pending").first()
    assert notification is not None
    notify.deliver(notification.pk)
    notification.refresh_from_db()
    assert "refused by the address guard (link-local)" in notification.last_error
    assert hook.refused == []
