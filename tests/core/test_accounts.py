"""Logins: Django auth with password validators, session expiry and throttled failures."""

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError


def test_login_and_logout(client, personas):
    personas.member.set_password("a-long-password-2026")
    personas.member.save()
    response = client.post(
        "/login/", {"username": "mia-member", "password": "a-long-password-2026"}
    )
    assert response.status_code == 302
    assert client.get("/").status_code == 200
    client.post("/logout/")
    assert client.get("/").status_code == 302


def test_failed_logins_are_throttled(client, personas):
    personas.member.set_password("a-long-password-2026")
    personas.member.save()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        r = client.post("/login/", {"username": "mia-member", "password": "wrong"})
        assert r.status_code == 200
        assert "Please enter a correct username and password" in r.content.decode()
    assert client.post("/login/", {"username": "mia-member", "password": "x"}).status_code == 429
    # Locked: even the right password is refused until the cool-off ends.
    locked = client.post("/login/", {"username": "mia-member", "password": "a-long-password-2026"})
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.content.decode()


def test_password_validators_refuse_weak_passwords(db):
    user = get_user_model()(username="weak")
    with pytest.raises(ValidationError):
        validate_password("password", user)
    with pytest.raises(ValidationError):
        validate_password("12345678901234", user)
    validate_password("correct-horse-battery-staple", user)


def test_sessions_expire():
    assert 0 < settings.SESSION_COOKIE_AGE <= 24 * 3600
