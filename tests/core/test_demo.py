"""seed_demo makes the Acme Shop demo and changes nothing when run again."""

import io
import re

from django.core.management import call_command

from releasecenter.models import AuditEvent, Environment, Membership, Project, Service


def snapshot():
    return (
        list(Project.objects.values_list("slug", "name")),
        list(Environment.objects.values_list("name", "kind", "order", "protected")),
        list(Service.objects.values_list("name", "tier")),
        list(Membership.objects.values_list("user__username", "role", "signoff_capacities")),
        AuditEvent.objects.count(),
    )


def test_seed_demo_creates_the_demo_and_is_idempotent(db):
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert "login: lead / " in out.getvalue() and "login: engineer / " in out.getvalue()
    project = Project.objects.get(slug="acme-shop")
    assert project.name == "Acme Shop"
    assert list(project.environments.values_list("name", flat=True)) == ["staging", "production"]
    services = project.services.all()
    assert len(services) == 8
    assert sorted({s.tier for s in services}) == [1, 2, 3]
    roles = dict(project.memberships.values_list("user__username", "role"))
    assert roles == {"admin": "admin", "lead": "lead", "engineer": "engineer"}
    # Made through the services, so the demo's history is in the audit log like any other.
    verbs = list(AuditEvent.objects.filter(project=project).values_list("verb", flat=True))
    for verb, count in (("project.created", 1), ("environment.created", 2), ("service.created", 8)):
        assert verbs.count(verb) == count, verb
    assert verbs.count("member.added") == 2, verbs
    first = snapshot()
    call_command("seed_demo", stdout=io.StringIO())
    assert snapshot() == first


def test_demo_logins_work(client, db):
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    logins = [
        ln.split("login: ")[1].split()[:3] for ln in out.getvalue().splitlines() if "login: " in ln
    ]
    for username, _slash, password in logins:
        response = client.post("/login/", {"username": username, "password": password})
        assert response.status_code == 302, username
        assert client.get("/p/acme-shop/").status_code == 200
        client.post("/logout/")


def test_generate_benchmark_data_scales(db):
    from django.contrib.auth import get_user_model

    call_command("generate_benchmark_data", "--scale", "3", stdout=io.StringIO())
    assert Project.objects.filter(slug__startswith="bench-").count() == 3
    assert Environment.objects.filter(project__slug__startswith="bench-").count() == 6
    assert Service.objects.filter(project__slug__startswith="bench-").count() == 24
    assert get_user_model().objects.filter(username__startswith="bench-").count() == 15
    call_command("generate_benchmark_data", "--scale", "2", stdout=io.StringIO())
    assert Project.objects.filter(slug__startswith="bench-").count() == 5


def _demo_environment(tmp_path) -> dict[str, str]:  # noqa: ANN001
    """What scripts/demo exports for the app, read from the file it sources."""
    import os
    import subprocess

    from tests.conftest import ROOT

    out = subprocess.run(
        ["bash", "-c", "set -euo pipefail; source scripts/demo-env; env -0"],
        cwd=ROOT,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "RELEASECENTER_VAR_DIR": str(tmp_path),
        },
        capture_output=True,
        check=True,
    ).stdout.decode()
    exported = dict(line.split("=", 1) for line in out.split("\0") if "=" in line)
    names = ("DEBUG", "SECRET_KEY", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_COOKIES")
    return {name: exported[name] for name in names if name in exported}


def test_the_demo_never_shows_djangos_debug_page(personas, start_web, tmp_path):
    """A person trying the demo who mistypes an address, or opens another project's page, meets
    the app's own page in its layout, not the debug page with the URLconf and settings."""
    demo_env = _demo_environment(tmp_path)
    assert demo_env["DEBUG"] == "0"
    assert len(demo_env["SECRET_KEY"]) >= 50
    assert (tmp_path / "demo-secret-key").read_text().strip() == demo_env["SECRET_KEY"]
    web = start_web(**demo_env)
    anonymous, member = web.client(), web.client()
    # Log in through the form, as in the demo: its cookies must work over plain HTTP.
    login = member.get("/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
    done = member.post(
        "/login/",
        data={"username": personas.member.username, "password": "x", "csrfmiddlewaretoken": csrf},
        headers={"Referer": f"{web.url}/login/"},
    )
    assert done.status_code == 302 and member.get("/p/shop/").status_code == 200
    for client, path in (
        (anonymous, "/no-such-page/"),
        (member, "/p/shop/no-such-page/"),
        (member, "/p/elsewhere/"),
    ):
        response = client.get(path)
        assert response.status_code == 404, (path, response.headers.get("location"))
        assert 'class="container-fluid topbar"' in response.text, path
        assert "Not found" in response.text
        for debug_marker in ("Raised by", "URLconf", "DEBUG = True", "Traceback"):
            assert debug_marker not in response.text, (path, debug_marker)
