"""What higher apps contribute to incidents, which live in ``monitoring``.

``monitoring`` may not import ``deployments``, yet an incident page shows the deployments that
preceded it, merges their steps into its timeline and rolls one back. A higher app fills that in
by registering a source in its ``AppConfig.ready()``:

    from releasecenter import incident_hooks
    incident_hooks.register("deployments", DeploymentIncidentSource())

A source subclasses ``IncidentSource`` and overrides what it knows about. Every method works on
plain values (ids, times) and answers with the dataclasses below, in a fixed number of queries
however much there is, so an incident page's query count does not grow with its history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Subject:
    """What an entry is about, with a link to it."""

    type: str
    id: str
    url: str = ""
    label: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "id": self.id, "url": self.url}


@dataclass(frozen=True)
class SystemEntry:
    """A line of the merged timeline that Release Center saw rather than a person wrote.

    ``text`` names its subject ("Deployment #12 of 1.5.0 to production failed verification").
    ``kind`` is one of KINDS, for filtering.
    """

    occurred_at: datetime
    kind: str
    text: str
    subject: Subject | None = None
    environment: str = ""
    # Unique across sources, for ordering ties and de-duplication.
    key: str = ""


KINDS = {
    "deployment": "Deployments",
    "rollback": "Rollbacks",
    "check": "Checks",
    "override": "Gate overrides and break-glass",
    "signoff": "Sign-offs",
    "lock": "Environment locks",
}


@dataclass(frozen=True)
class ServiceChange:
    service: str
    before: str
    after: str


@dataclass(frozen=True)
class Suspect:
    """A deployment that reached an affected environment before the incident started."""

    id: str
    title: str  # "Deployment #12 of 1.5.0 to production"
    url: str
    environment: str
    version: str
    status: str
    at: datetime
    changes: tuple[ServiceChange, ...] = ()
    rolled_back: bool = False
    # Whether a rollback can be asked for now (finished, worker-run, the latest one); else why not.
    can_roll_back: bool = False
    rollback_blocked_reason: str = ""
    kind: str = "deploy"


@dataclass
class Facts:
    """What a postmortem states about the releases involved, each section a list of lines."""

    sections: dict[str, list[str]] = field(default_factory=dict)


class IncidentSource:
    """Override what your app knows. Defaults contribute nothing."""

    def timeline(
        self,
        project_id: int,
        environment_ids: list[int],
        since: datetime,
        until: datetime | None,
        *,
        before: datetime | None = None,
        limit: int = 200,
        kinds: set[str] | None = None,
    ) -> list[SystemEntry]:
        """Entries in [since, until] (and before ``before``), newest first, at most ``limit``."""
        return []

    def suspects(
        self, project_id: int, environment_ids: list[int], since: datetime, until: datetime
    ) -> list[Suspect]:
        """Deployments that reached these environments in the window, newest first."""
        return []

    def roll_back(self, actor: Any, membership: Any, suspect_id: str, reason: str) -> str | None:
        """Ask for a rollback of a suspect this source listed; return the rollback's URL, or None
        if the id is not this source's. Raises ValidationError / PermissionDenied as usual."""
        return None

    def postmortem_facts(
        self, project_id: int, environment_ids: list[int], since: datetime, until: datetime
    ) -> Facts:
        return Facts()


_sources: dict[str, IncidentSource] = {}


def register(name: str, source: IncidentSource) -> None:
    _sources[name] = source


def sources() -> list[IncidentSource]:
    return list(_sources.values())


def timeline(
    project_id: int,
    environment_ids: list[int],
    since: datetime,
    until: datetime | None,
    *,
    before: datetime | None = None,
    limit: int = 200,
    kinds: set[str] | None = None,
) -> list[SystemEntry]:
    entries: list[SystemEntry] = []
    for source in _sources.values():
        entries.extend(
            source.timeline(
                project_id, environment_ids, since, until, before=before, limit=limit, kinds=kinds
            )
        )
    entries.sort(key=lambda e: (e.occurred_at, e.key), reverse=True)
    return entries[:limit]


def suspects(
    project_id: int, environment_ids: list[int], since: datetime, until: datetime
) -> list[Suspect]:
    found: list[Suspect] = []
    for source in _sources.values():
        found.extend(source.suspects(project_id, environment_ids, since, until))
    found.sort(key=lambda s: s.at, reverse=True)
    return found


def roll_back(actor: Any, membership: Any, suspect_id: str, reason: str) -> str | None:
    for source in _sources.values():
        url = source.roll_back(actor, membership, suspect_id, reason)
        if url is not None:
            return url
    return None


def postmortem_facts(
    project_id: int, environment_ids: list[int], since: datetime, until: datetime
) -> Facts:
    merged = Facts()
    for source in _sources.values():
        for title, lines in source.postmortem_facts(
            project_id, environment_ids, since, until
        ).sections.items():
            merged.sections.setdefault(title, []).extend(lines)
    return merged
