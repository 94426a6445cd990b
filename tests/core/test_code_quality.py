"""The tree is lint-clean and no model change lacks its migration."""

import subprocess
import sys

from tests.conftest import ROOT


def test_ruff_check_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout


def test_no_missing_migrations():
    result = subprocess.run(
        [sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "releasecenter.settings_test"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_row_locks_over_a_join_name_the_rows_they_lock():
    """`select_for_update()` with `select_related()` and no `of=` locks every joined row (the
    project's, say) and deadlocks with workers that only mean to reference it."""
    import ast

    offenders = []
    for path in ROOT.glob("*/**/*.py"):
        if path.parts[len(ROOT.parts)] in {".venv", "tests", "tools", "bench", "var"}:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            chain, calls = node, []
            while isinstance(chain, ast.Call) and isinstance(chain.func, ast.Attribute):
                calls.append(chain)
                chain = chain.func.value
            names = {c.func.attr: c for c in calls}
            lock = names.get("select_for_update")
            if lock and "select_related" in names and not any(k.arg == "of" for k in lock.keywords):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert sorted(set(offenders)) == []


def test_numbers_from_outside_are_read_with_ascii_int():
    """`str.isdigit()` is true for "²" and "٣": a guard made of it lets them through to `int()`
    or the database. Outside input goes through releasecenter.validation.ascii_int."""
    import ast

    # Bytes (isdigit is ASCII-only there), the address-policy entries (whose ValueError is the
    # answer for a bad entry) and the simulated cluster (a test fixture, not the app).
    exempt = {"monitoring/lib/http1.py", "monitoring/lib/ssrf.py", "releasecenter/validation.py"}
    offenders = []
    for path in ROOT.glob("*/**/*.py"):
        relative = path.relative_to(ROOT).as_posix()
        top = relative.split("/", 1)[0]
        if top in {".venv", "tests", "tools", "bench", "var"} or relative in exempt:
            continue
        if relative.startswith("deployments/sim/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), relative)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "isdigit"
            ):
                offenders.append(f"{relative}:{node.lineno}")
    assert offenders == []
