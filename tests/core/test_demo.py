"""seed_demo makes the Acme Shop demo and changes nothing when run again."""

import io

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
