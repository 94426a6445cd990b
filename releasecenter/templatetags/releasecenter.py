"""Template helpers shared by every app's pages."""

from __future__ import annotations

import string

from django import template

register = template.Library()

# How an event reads in a timeline. Fields come from the event's before/after/data; an event
# whose fields are missing, or whose verb is not listed, reads as its verb.
DESCRIPTIONS = {
    "project.created": "created the project",
    "project.quorum_rule_changed": "changed whether the requester of a deployment counts towards "
    "its quorum",
    "environment.created": "added environment {after[name]}",
    "environment.updated": "changed environment {after[name]}",
    "environment.locked": "locked {after[environment]}: {after[reason]}",
    "environment.unlocked": "unlocked {after[environment]}: {after[reason]}",
    "environment.policy_updated": "changed an environment policy",
    "environment.signoffs_required": "changed the required sign-offs",
    "service.created": "added service {after[name]}",
    "member.added": "added {after[username]} as {after[role]}",
    "member.updated": "changed a member's role or capacities",
    "member.removed": "removed {before[username]}",
    "announcement.posted": "announced: {data[message]}",
    "release.created": "created release {after[version]}",
    "release.updated": "changed the release",
    "release.status_changed": "{data[environment]}: {before[status]} → {after[status]}",
    "release.signed_off": "{after[decision]}d as {after[role]} in {after[environment]}",
    "release.signoff_withdrawn": "withdrew a sign-off as {data[role]} in {data[environment]}",
    "release.risk_accepted": "accepted a risk in {after[environment]}: {after[item]}",
    "release.warning_acknowledged": "acknowledged a warning in {after[environment]}: {after[item]}",
    "release.overridden": "OVERRODE a no-go in {after[environment]}: {after[reason]}",
    "release.follow_up_resolved": "resolved a follow-up",
    "release.commit_reset": "{data[environment]}: {data[summary]}, because the commit changed "
    "from {data[old_commit]:.12} to {data[new_commit]:.12}",
    "run.item.reopened": "reopened “{data[text]}”: {data[reason]}",
}


class _Fields(dict):
    def __missing__(self, key: str) -> dict:
        return {}


@register.filter
def describe_event(event) -> str:  # noqa: ANN001
    """A short sentence for an audit event, without its actor and time."""
    pattern = DESCRIPTIONS.get(event.verb)
    if pattern is None:
        return event.verb.replace("_", " ").replace(".", ": ", 1)
    fields = _Fields(before=event.before or {}, after=event.after or {}, data=event.data or {})
    try:
        text = string.Formatter().vformat(pattern, (), fields)
    except (KeyError, IndexError, TypeError):
        return event.verb.replace("_", " ").replace(".", ": ", 1)
    return text.replace("_", " ")
