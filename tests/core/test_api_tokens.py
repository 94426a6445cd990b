"""API tokens: created in the UI or by a command, shown once, stored hashed, revocable."""

import io

from django.core.management import call_command
from django.test import Client

from releasecenter.models import ApiToken, AuditEvent


def test_command_prints_token_once_and_stores_only_hash(personas):
    out = io.StringIO()
    call_command("create_api_token", personas.member.username, "--name", "CI", stdout=out)
    raw = out.getvalue().strip()
    assert raw.startswith("rc_") and len(raw) > 30
    token = ApiToken.objects.get(user=personas.member, name="CI")
    assert token.token_hash == ApiToken.hash(raw)
    assert raw not in str(ApiToken.objects.filter(pk=token.pk).values().first())


def test_token_authenticates_then_revocation_stops_it(personas):
    out = io.StringIO()
    call_command("create_api_token", personas.member.username, "--name", "CI", stdout=out)
    raw = out.getvalue().strip()
    client = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    assert client.get("/api/v1/projects/", **auth).status_code == 200
    assert ApiToken.objects.get(name="CI").last_used_at is not None

    token = ApiToken.objects.get(name="CI")
    revoke = client.delete(f"/api/v1/tokens/{token.pk}/", **auth)
    assert revoke.status_code == 200
    assert revoke.json()["revoked_at"] is not None
    assert client.get("/api/v1/projects/", **auth).status_code == 401
    assert AuditEvent.objects.filter(verb="api_token.revoked", object_id=str(token.pk)).exists()


def test_wrong_or_missing_token_is_401(db):
    client = Client()
    assert client.get("/api/v1/projects/").status_code in (401, 403)
    assert client.get("/api/v1/projects/", HTTP_AUTHORIZATION="Bearer rc_nope").status_code == 401


def test_ui_creates_and_revokes_tokens(client, personas):
    client.force_login(personas.member)
    page = client.post("/tokens/", {"name": "GitHub Actions"})
    assert page.status_code == 200
    token = ApiToken.objects.get(user=personas.member, name="GitHub Actions")
    shown = page.context["new_token"]
    assert ApiToken.hash(shown) == token.token_hash
    assert shown in page.content.decode()
    # Shown once: the list page never shows the secret again.
    again = client.get("/tokens/").content.decode()
    assert shown not in again and token.hint in again
    client.post(f"/tokens/{token.pk}/revoke/")
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_cannot_revoke_another_users_token(api_client_for, personas):
    from releasecenter import services

    victim, _raw = services.create_api_token(personas.lead, "lead's")
    client = api_client_for(personas.member)
    assert client.delete(f"/api/v1/tokens/{victim.pk}/").status_code == 404
    victim.refresh_from_db()
    assert victim.revoked_at is None


def test_unknown_user_command_fails_clearly(db):
    import pytest
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No active user 'nobody'"):
        call_command("create_api_token", "nobody", "--name", "x")


def _form_action(html: str, button: str) -> str:
    import re

    for form in re.findall(r"<form\b[^>]*>.*?</form>", html, re.S):
        if f">{button}</button>" in form:
            return re.search(r'action="([^"]*)"', form).group(1)
    raise AssertionError(f"no form with a {button!r} button")


def test_revoking_in_the_page_stops_the_token(personas):
    """The flow a person clicks: the menu link, the create form, the Revoke button, with CSRF
    enforced as in a browser; the revoked token is then refused by the API."""
    import re

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(personas.member)
    home = browser.get("/").content.decode()
    tokens_url = re.search(r'<a href="([^"]+)">API tokens</a>', home).group(1)
    page = browser.get(tokens_url)
    assert page.status_code == 200
    assert "Create token" in page.content.decode()
    csrf = browser.cookies["csrftoken"].value
    created = browser.post(tokens_url, {"name": "CI", "csrfmiddlewaretoken": csrf})
    assert created.status_code == 200
    raw = created.context["new_token"]
    api = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    assert api.get("/api/v1/projects/", **auth).status_code == 200

    revoke_url = _form_action(created.content.decode(), "Revoke")
    revoked = browser.post(revoke_url, {"csrfmiddlewaretoken": csrf}, follow=True)
    assert revoked.status_code == 200
    assert revoked.redirect_chain[-1][0] == tokens_url
    assert "revoked" in revoked.content.decode()
    assert api.get("/api/v1/projects/", **auth).status_code == 401
