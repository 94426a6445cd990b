"""The settings refuse insecure production configurations and pass Django's deploy checks."""

import os
import secrets
import subprocess
import sys

from tests.conftest import ROOT


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    # A clean environment: the test process carries the test settings' variables.
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    base["DJANGO_SETTINGS_MODULE"] = "releasecenter.settings"
    base["RELEASECENTER_VAR_DIR"] = str(ROOT / "var" / "test")
    base.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_short_secret_key_refuses_to_start():
    result = run_manage("check", DEBUG="0", SECRET_KEY="too-short")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    assert "at least 50 characters" in result.stderr
    assert "9 characters long" in result.stderr


def test_missing_secret_key_refuses_to_start():
    result = run_manage("check", DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_a_malformed_encryption_key_refuses_to_start():
    from cryptography.fernet import Fernet

    result = run_manage("check", DEBUG="1", RELEASECENTER_ENCRYPTION_KEY="not-a-fernet-key")
    assert result.returncode != 0
    assert "RELEASECENTER_ENCRYPTION_KEY must be a Fernet key" in result.stderr
    good = run_manage(
        "check", DEBUG="1", RELEASECENTER_ENCRYPTION_KEY=Fernet.generate_key().decode()
    )
    assert good.returncode == 0, good.stderr


def test_debug_runs_without_a_secret_key():
    result = run_manage("check", DEBUG="1")
    assert result.returncode == 0, result.stderr


def test_check_deploy_is_clean_with_production_settings():
    key = secrets.token_urlsafe(64)[:50]
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="0",
        SECRET_KEY=key,
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/releasecenter",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_would_flag_a_weak_setting():
    # The same check fails when a protection is switched off, so the test above can fail.
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(64)[:50],
        SECURE_SSL_REDIRECT="0",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/releasecenter",
    )
    assert result.returncode != 0
    assert "security.W008" in result.stdout + result.stderr


def test_logs_are_json_in_production():
    import json

    result = run_manage(
        "shell",
        "-c",
        "import logging; logging.getLogger('rc.test').warning('deploy %s', 'ok')",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(64)[:50],
    )
    assert result.returncode == 0, result.stderr
    line = [ln for ln in result.stderr.splitlines() if "rc.test" in ln][0]
    record = json.loads(line)
    assert record["message"] == "deploy ok"
    assert record["levelname"] == "WARNING"
