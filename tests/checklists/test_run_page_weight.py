"""A long run's page stays light: each item's N/A, note and evidence forms are fetched when they
are opened, not carried by every item (a 77-item run weighed 200-280 KiB with them)."""

from __future__ import annotations

import pytest

from checklists import services
from checklists.benchdata import gated_runbook_markdown
from checklists.models import RunItem

from .conftest import COMMERCE

PAGE_LIMIT = 80 * 1024


@pytest.fixture
def gated_run(personas):  # noqa: ANN001, ANN201
    template = services.import_runbook(
        personas.member, personas.project, gated_runbook_markdown(), name="Production gates"
    ).template
    return services.create_run(personas.member, template, environment=personas.staging)


def run_page(client, personas, run) -> str:  # noqa: ANN001
    client.force_login(personas.member)
    response = client.get(f"/p/{personas.project.slug}/checklists/runs/{run.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def test_the_run_page_of_77_items_weighs_under_80_kib(client, personas, gated_run):
    html = run_page(client, personas, gated_run)
    assert html.count('class="run-item ') == 77
    assert len(html.encode()) < PAGE_LIMIT, f"{len(html.encode()) / 1024:.1f} KiB"
    # The forms are not in the page; a link to each item's forms stands in for them.
    assert "<textarea" not in html and 'type="file"' not in html
    assert html.count("/forms/") == 77


def test_the_commerce_runbook_page_weighs_under_80_kib_when_the_corpus_is_here(client, personas):
    """Runs only with ../shared beside the clone; the 77-item fixture above covers the shape."""
    if not COMMERCE.exists():
        return
    template = services.import_runbook(
        personas.member, personas.project, COMMERCE.read_bytes(), name="Commerce"
    ).template
    run = services.create_run(personas.member, template, environment=personas.staging)
    html = run_page(client, personas, run)
    assert len(html.encode()) < PAGE_LIMIT, f"{len(html.encode()) / 1024:.1f} KiB"


def test_an_items_forms_come_as_a_fragment_or_a_page_and_only_for_engineers(
    client, personas, gated_run
):
    row = RunItem.objects.filter(run=gated_run).order_by("item__position").first()
    services.set_note(personas.member, row, note="Checked <b>twice</b>", expected_version=1)
    row.refresh_from_db()
    url = f"/p/{personas.project.slug}/checklists/runs/{gated_run.pk}/items/{row.pk}/forms/"
    client.force_login(personas.member)
    fragment = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert fragment.startswith("<form")
    assert f'name="version" value="{row.version}"' in fragment
    assert "Checked &lt;b&gt;twice&lt;/b&gt;</textarea>" in fragment
    # Without JavaScript the link opens the forms on a page of their own.
    page = client.get(url).content.decode()
    assert "<html" in page and 'data-item-action="note"' in page
    client.force_login(personas.viewer)
    assert client.get(url, HTTP_HX_REQUEST="true").status_code in (403, 404)
    client.force_login(personas.outsider)
    assert client.get(url, HTTP_HX_REQUEST="true").status_code == 404
