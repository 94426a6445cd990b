"""Reliability: many people ticking at once over real PostgreSQL.

20 clients tick and untick random items of a 1,000-item run at the same time. Afterwards the
stored state of every item equals the replay of its audit events, every change a client was told
succeeded is exactly one event, and every refused change was refused, not lost or applied.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict

import pytest

from checklists import services
from checklists.models import Run, RunItem
from releasecenter.models import AuditEvent
from tests.checklists.conftest import runbook_with
from tests.threads import run_together

CLIENTS = 20
ITEMS = 1000
OPS_PER_CLIENT = 60
ITEM_VERBS = {
    "run.item.ticked",
    "run.item.unticked",
    "run.item.na",
    "run.item.noted",
    "run.item.evidence_added",
    "run.item.evidence_removed",
}

pytestmark = pytest.mark.django_db(transaction=True)


def replay(run: Run) -> dict[str, tuple[str, list[int]]]:
    """Fold the run's item events in id order: final state and the versions seen per item."""
    state: dict[str, tuple[str, list[int]]] = {}
    events = AuditEvent.objects.filter(topic=f"run:{run.pk}", verb__in=ITEM_VERBS).order_by("id")
    for event in events:
        _old, versions = state.get(event.data["item"], ("open", []))
        state[event.data["item"]] = (event.after["state"], [*versions, event.data["version"]])
    return state


def test_twenty_clients_tick_and_untick_a_thousand_items(personas):
    users = [personas.member, personas.lead, personas.admin]
    template = services.import_runbook(
        personas.member, personas.project, runbook_with(ITEMS, sections=10)
    ).template
    run = services.create_run(personas.member, template)
    keys = list(RunItem.objects.filter(run=run).values_list("pk", flat=True))
    assert len(keys) == ITEMS
    # A few hot items make sure people really do collide on the same item.
    hot = keys[:10]

    def client(index: int, barrier: threading.Barrier) -> tuple[list, int]:
        rng = random.Random(index)
        actor = users[index % len(users)]
        applied, refused = [], 0
        barrier.wait()
        for _ in range(OPS_PER_CLIENT):
            pk = rng.choice(hot) if rng.random() < 0.3 else rng.choice(keys)
            # What this client's page shows: the state and version it last read.
            row = RunItem.objects.get(pk=pk)
            try:
                if row.state == RunItem.State.OPEN:
                    done = services.tick(actor, row, expected_version=row.version)
                else:
                    done = services.untick(actor, row, expected_version=row.version)
            except services.Conflict:
                refused += 1
                continue
            applied.append((str(pk), done.version, done.state))
        return applied, refused

    results = run_together(CLIENTS, client)
    applied = [op for ops, _refused in results for op in ops]
    refused = sum(r for _ops, r in results)
    assert len(applied) + refused == CLIENTS * OPS_PER_CLIENT
    assert refused > 0, "the hot items should have produced conflicts"

    replayed = replay(run)
    stored = {str(r.pk): (r.state, r.version) for r in RunItem.objects.filter(run=run)}
    # Every stored state is the replay of the audit events…
    for key, (state, version) in stored.items():
        final, versions = replayed.get(key, ("open", []))
        assert state == final, key
        # …with one event per change, versions 2, 3, 4… without gaps or repeats.
        assert versions == list(range(2, version + 1)), key
    # Every change a client was told succeeded is exactly one event: no tick lost, none invented.
    from_events = {
        (e.data["item"], e.data["version"], e.after["state"])
        for e in AuditEvent.objects.filter(topic=f"run:{run.pk}", verb__in=ITEM_VERBS)
    }
    assert sorted(applied) == sorted(from_events)
    assert len(from_events) == len(applied)


def test_last_items_ticked_at_once_complete_the_run_exactly_once(personas):
    template = services.import_runbook(
        personas.member, personas.project, runbook_with(CLIENTS)
    ).template
    run = services.create_run(personas.member, template)
    rows = list(RunItem.objects.filter(run=run))

    def tick(index: int, barrier: threading.Barrier) -> None:
        row = rows[index]
        barrier.wait()
        services.tick(personas.member, row, expected_version=row.version)

    run_together(CLIENTS, tick)
    run.refresh_from_db()
    assert run.status == "completed"
    assert AuditEvent.objects.filter(topic=f"run:{run.pk}", verb="run.completed").count() == 1

    fresh = list(RunItem.objects.filter(run=run))

    def untick_some(index: int, barrier: threading.Barrier) -> None:
        row = fresh[index]
        barrier.wait()
        if index % 2 == 0:
            services.untick(personas.member, row, expected_version=row.version)

    run_together(CLIENTS, untick_some)
    run.refresh_from_db()
    assert run.status == "open" and run.completed_at is None
    verbs = defaultdict(int)
    for verb in AuditEvent.objects.filter(topic=f"run:{run.pk}").values_list("verb", flat=True):
        verbs[verb] += 1
    assert verbs["run.reopened"] == 1


def test_twenty_browsers_over_http(start_web, personas):
    """The same over the real web server: the page's tick and untick forms, with the version
    the page showed, from 20 logged-in sessions at once."""
    server = start_web()
    template = services.import_runbook(
        personas.member, personas.project, runbook_with(200, sections=4)
    ).template
    run = services.create_run(personas.member, template)
    keys = list(RunItem.objects.filter(run=run).values_list("pk", flat=True))
    users = (personas.member, personas.lead, personas.admin)
    base = f"/p/shop/checklists/runs/{run.pk}/items"

    def browser(index: int, barrier: threading.Barrier) -> tuple[list, int]:
        rng = random.Random(1000 + index)
        http = server.client(users[index % len(users)])
        page = http.get(f"/p/shop/checklists/runs/{run.pk}/")
        # Outside DEBUG the CSRF cookie is Secure, which httpx keeps off plain http; a browser
        # treats 127.0.0.1 as a secure origin and sends it, so hand it over the same way.
        token = page.cookies["csrftoken"]
        http.cookies.set("csrftoken", token)
        applied, refused = [], 0
        barrier.wait()
        for _ in range(15):
            pk = rng.choice(keys[:20])
            row = RunItem.objects.get(pk=pk)
            action = "tick" if row.state == "open" else "untick"
            response = http.post(
                f"{base}/{pk}/{action}/",
                data={"version": row.version},
                headers={"HX-Request": "true", "X-CSRFToken": token, "Referer": server.url},
            )
            if response.status_code == 409:
                refused += 1
                assert "changed this item" in response.text
                continue
            assert response.status_code == 200, response.text[:500]
            applied.append((str(pk), row.version + 1))
        http.close()
        return applied, refused

    results = run_together(CLIENTS, browser)
    applied = sorted(op for ops, _r in results for op in ops)
    events = sorted(
        (e.data["item"], e.data["version"])
        for e in AuditEvent.objects.filter(topic=f"run:{run.pk}", verb__in=ITEM_VERBS)
    )
    assert applied == events
    replayed = replay(run)
    for row in RunItem.objects.filter(run=run):
        assert row.state == replayed.get(str(row.pk), ("open", []))[0]
