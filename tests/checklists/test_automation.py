"""Automated items: a runner registered for a kind ticks the item with its response as evidence,
or leaves it open with the failure shown. The runner here calls a real HTTP server that the test
starts on 127.0.0.1; nothing of the checklist side is mocked."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from django.core.exceptions import ValidationError

from checklists import services, tasks
from checklists.models import Evidence, RunItem
from releasecenter import automation
from releasecenter.models import AuditEvent


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        status = 200 if self.path == "/health" else 503
        body = json.dumps({"status": "ok" if status == 200 else "degraded", "db": "up"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


@pytest.fixture
def health_server():  # noqa: ANN201
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def http_check(run_item: RunItem) -> automation.AutomationResult:
    url = run_item.item.automation["url"]
    response = httpx.get(url, timeout=5)
    return automation.AutomationResult(
        passed=response.status_code == 200,
        summary=f"GET {url} answered {response.status_code}",
        evidence_text=response.text,
    )


@pytest.fixture
def http_kind():  # noqa: ANN201
    automation.register("http-test", http_check)
    yield "http-test"
    automation.unregister("http-test")


def automated_run(personas, url: str):  # noqa: ANN001, ANN201
    template = services.import_runbook(
        personas.member,
        personas.project,
        "# Checks\n\n## Health (NO-GO)\n\n- [ ] API answers healthy\n- [ ] Manual step\n",
    ).template
    item = template.current_version.items.get(text="API answers healthy")
    services.update_item(
        personas.member, template, item.pk, automation={"kind": "http-test", "url": url}
    )
    run = services.create_run(personas.member, template, environment=personas.staging)
    return run, RunItem.objects.select_related("item").get(
        run=run, item__text="API answers healthy"
    )


def test_passing_check_ticks_the_item_with_the_response_as_evidence(
    personas, health_server, http_kind
):
    run, row = automated_run(personas, f"{health_server}/health")
    result = services.run_automated_item(None, row)
    assert result.state == "done"
    assert result.done_by is None
    assert result.automation_passed is True
    assert result.automation_summary.endswith("answered 200")
    evidence = Evidence.objects.get(run_item=row)
    assert evidence.kind == "text"
    assert json.loads(evidence.text) == {"status": "ok", "db": "up"}
    event = AuditEvent.objects.filter(topic=f"run:{run.pk}").latest("id")
    assert event.verb == "run.item.ticked"
    assert event.data["automated"] is True and event.data["state"] == "done"
    assert event.data["version"] == result.version


def test_failing_check_leaves_the_item_open_with_the_failure_shown(
    client, personas, health_server, http_kind
):
    run, row = automated_run(personas, f"{health_server}/degraded")
    result = services.run_automated_item(personas.member, row)
    assert result.state == "open"
    assert result.automation_passed is False
    # The failure is kept as the item's evidence: what the check answered, and when.
    evidence = Evidence.objects.get(run_item=row)
    assert evidence.name.startswith("http-test failure") and '"degraded"' in evidence.text
    assert AuditEvent.objects.filter(topic=f"run:{run.pk}").latest("id").verb == (
        "run.item.automation_failed"
    )
    client.force_login(personas.viewer)
    page = client.get(f"/p/shop/checklists/runs/{run.pk}/").content.decode()
    assert "answered 503" in page and "failed" in page


def test_unreachable_target_is_a_failure_not_a_crash(personas, http_kind):
    from tests.conftest import free_port

    run, row = automated_run(personas, f"http://127.0.0.1:{free_port()}/health")
    result = services.run_automated_item(personas.member, row)
    assert result.state == "open"
    assert result.automation_summary.startswith("The check could not run")


def test_items_without_a_runner_or_already_done(personas, health_server, http_kind):
    run, row = automated_run(personas, f"{health_server}/health")
    manual = RunItem.objects.get(run=run, item__text="Manual step")
    with pytest.raises(ValidationError, match="no automated check"):
        services.run_automated_item(personas.member, manual)
    services.run_automated_item(personas.member, row)
    with pytest.raises(ValidationError, match="already done"):
        services.run_automated_item(personas.member, row)
    with pytest.raises(ValidationError, match="No automation of kind 'nope'"):
        services.update_item(
            personas.member, run.template, row.item_id, automation={"kind": "nope"}
        )


def test_task_runs_the_check_and_is_safe_twice(personas, health_server, http_kind):
    _run, row = automated_run(personas, f"{health_server}/health")
    assert tasks.run_automated_item(row.pk, personas.member.pk) == "done"
    assert tasks.run_automated_item(row.pk, personas.member.pk).startswith("This item is already")
    assert Evidence.objects.filter(run_item=row).count() == 1


def test_run_check_button_queues_the_task(
    client, personas, health_server, http_kind, django_capture_on_commit_callbacks
):
    run, row = automated_run(personas, f"{health_server}/health")
    client.force_login(personas.member)
    page = client.get(f"/p/shop/checklists/runs/{run.pk}/").content.decode()
    assert 'data-item-action="automation"' in page
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            f"/p/shop/checklists/runs/{run.pk}/items/{row.pk}/automation/", HTTP_HX_REQUEST="true"
        )
    assert response.status_code == 200
    assert len(callbacks) == 1
