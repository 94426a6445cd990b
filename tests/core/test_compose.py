"""docker-compose.yml is valid against the compose-spec JSON schema (no Docker engine here)."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

SCHEMA = ROOT / "tools" / "node_modules" / "dclint" / "schemas" / "compose.schema.json"


def validate(path: Path) -> subprocess.CompletedProcess:
    if not SCHEMA.exists():
        pytest.fail("The compose schema is missing: ./scripts/test runs npm ci in tools/.")
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--schemafile", str(SCHEMA), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_file_matches_the_compose_spec():
    result = validate(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_rejects_a_broken_compose_file(tmp_path):
    broken = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    broken["services"]["web"]["healthcheck"]["interval"] = {"not": "a duration"}
    path = tmp_path / "compose.yml"
    path.write_text(yaml.safe_dump(broken))
    assert validate(path).returncode != 0


def test_compose_has_the_whole_stack_with_health_checks():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"postgres", "redis", "azurite", "migrate", "web", "worker", "beat"}
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    for name in ("postgres", "redis", "azurite", "web", "worker", "beat"):
        assert "healthcheck" in services[name], name
    assert services["migrate"]["restart"] == "no"
    # A fresh stack has no blob container until the migrate step makes it.
    assert "ensure_storage" in " ".join(services["migrate"]["command"])
    assert services["migrate"]["depends_on"]["azurite"]["condition"] == "service_healthy"
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "uvicorn" in open(ROOT / "Dockerfile").read()
