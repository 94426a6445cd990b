"""Personas: an outsider finds nothing of a project, in pages and in the API."""

import pytest
from django.urls import reverse

PAGES = [
    "project-overview",
    "project-settings",
    "release-list",
    "checklist-list",
    "deployment-list",
    "health-index",
    "incident-list",
]


@pytest.mark.parametrize("page", PAGES)
def test_outsider_gets_404_on_every_project_page(client, personas, page):
    client.force_login(personas.outsider)
    response = client.get(reverse(page, args=[personas.project.slug]))
    assert response.status_code == 404


@pytest.mark.parametrize("page", PAGES)
def test_member_sees_every_project_page(client, personas, page):
    client.force_login(personas.viewer)
    response = client.get(reverse(page, args=[personas.project.slug]))
    assert response.status_code == 200


def test_anonymous_is_sent_to_login(client, personas):
    response = client.get(reverse("project-overview", args=[personas.project.slug]))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


API_OBJECTS = ["api-project", "api-environments", "api-services", "api-members"]


@pytest.mark.parametrize("name", API_OBJECTS)
def test_outsider_gets_404_on_every_api_object(api_client_for, personas, name):
    client = api_client_for(personas.outsider)
    assert client.get(reverse(name, args=[personas.project.slug])).status_code == 404


@pytest.mark.parametrize("name", API_OBJECTS)
def test_member_reads_api_objects(api_client_for, personas, name):
    client = api_client_for(personas.member)
    assert client.get(reverse(name, args=[personas.project.slug])).status_code == 200


def test_project_list_shows_only_own_projects(api_client_for, personas):
    client = api_client_for(personas.member)
    body = client.get("/api/v1/projects/").json()
    assert [p["slug"] for p in body["results"]] == ["shop"]


def test_outsider_cannot_create_in_another_project(api_client_for, personas):
    client = api_client_for(personas.outsider)
    response = client.post(
        f"/api/v1/projects/{personas.project.slug}/environments/", {"name": "qa"}, format="json"
    )
    assert response.status_code == 404
    assert not personas.project.environments.filter(name="qa").exists()


def test_engineer_may_not_create_environments(api_client_for, personas):
    client = api_client_for(personas.member)
    response = client.post(
        f"/api/v1/projects/{personas.project.slug}/environments/", {"name": "qa"}, format="json"
    )
    assert response.status_code == 403
    assert "admin" in response.json()["detail"]


def test_admin_creates_environment_and_duplicate_is_a_conflict(api_client_for, personas):
    client = api_client_for(personas.admin)
    url = f"/api/v1/projects/{personas.project.slug}/environments/"
    created = client.post(url, {"name": "qa", "kind": "staging"}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["name"] == "qa"
    again = client.post(url, {"name": "qa"}, format="json")
    assert again.status_code == 409
    assert personas.project.environments.filter(name="qa").count() == 1


def test_bad_input_is_a_clear_400_and_changes_nothing(api_client_for, personas):
    client = api_client_for(personas.admin)
    before = personas.project.services.count()
    response = client.post(
        f"/api/v1/projects/{personas.project.slug}/services/",
        {"name": "bad name!", "tier": -1},
        format="json",
    )
    assert response.status_code == 400
    assert "name" in response.json() and "tier" in response.json()
    assert personas.project.services.count() == before


def test_members_api_adds_with_capacities(api_client_for, personas):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("newbie", password="x")
    client = api_client_for(personas.admin)
    response = client.post(
        f"/api/v1/projects/{personas.project.slug}/members/",
        {"username": "newbie", "role": "engineer", "signoff_capacities": ["DevOps Engineer"]},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["signoff_capacities"] == ["DevOps Engineer"]
    unknown = client.post(
        f"/api/v1/projects/{personas.project.slug}/members/",
        {"username": "ghost"},
        format="json",
    )
    assert unknown.status_code == 400
    assert "ghost" in str(unknown.json())


def test_admin_site_is_for_staff_only(client, personas):
    client.force_login(personas.admin)
    assert client.get("/admin/").status_code == 302
    personas.admin.is_staff = True
    personas.admin.save()
    assert client.get("/admin/").status_code == 200


def test_admin_shows_core_models_but_changes_go_through_the_audited_pages(client, personas):
    from releasecenter.models import Project

    personas.admin.is_staff = personas.admin.is_superuser = True
    personas.admin.save()
    client.force_login(personas.admin)
    change = f"/admin/releasecenter/project/{personas.project.pk}/change/"
    page = client.get(change)
    assert page.status_code == 200 and personas.project.name in page.content.decode()
    response = client.post(change, {"name": "Renamed", "slug": "renamed"})
    assert response.status_code == 403
    delete = client.post(
        f"/admin/releasecenter/project/{personas.project.pk}/delete/", {"post": "yes"}
    )
    assert delete.status_code == 403
    assert Project.objects.get(pk=personas.project.pk).name == personas.project.name
    assert client.get("/admin/releasecenter/apitoken/add/").status_code == 403


def test_project_list_query_count_does_not_grow(client, personas, django_assert_max_num_queries):
    from releasecenter import services

    for i in range(10):
        services.create_project(personas.member, slug=f"p{i}", name=f"P{i}")
    client.force_login(personas.member)
    with django_assert_max_num_queries(8):
        assert client.get("/").status_code == 200
