"""``{% oncall_panel project %}``: who is on call now and failing channels, for the overview."""

from __future__ import annotations

from typing import Any

from django import template

from monitoring.oncall import channels, schedules

register = template.Library()


@register.inclusion_tag("monitoring/oncall/_overview_panel.html")
def oncall_panel(project: Any) -> dict[str, Any]:
    return {
        "project": project,
        "on_call": schedules.project_on_call(project),
        "failing_channels": channels.failing_channels(project),
    }
