"""The compliance bundle of a release: one zip with a report (Markdown and JSON) of checklist states
(who ticked what, when), sign-offs, overrides, risk acceptances, every deployment of the release
(environment, commit, images per service, steps with their outcomes, who started it, the override
and the decision as it was when it started), the release timeline, and the evidence files.

``MANIFEST.sha256`` lists every other file with its SHA-256 (``sha256sum`` format, so
``sha256sum -c`` checks it too); ``MANIFEST.sha256.sig`` is an HMAC-SHA256 of the manifest with
this instance's key. ``manage.py verify_bundle FILE`` checks both offline and names any file that
was changed, added or removed.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import salted_hmac

from checklists.selectors import evidence_files, run_report
from releasecenter.models import AuditEvent
from releasecenter.templatetags.releasecenter import describe_event

from .models import Deployment, DeploymentStep, Release

MANIFEST = "MANIFEST.sha256"
SIGNATURE = "MANIFEST.sha256.sig"
SIGNATURE_SALT = "releasecenter.deployments.compliance-bundle"
# Progress events of a deployment (each step's start and end) are in its steps already.
DEPLOYMENT_TIMELINE_VERBS = ("deployment.created", "deployment.status_changed")


def _iso(value) -> str | None:  # noqa: ANN001
    return value.isoformat() if value else None


def release_report(release: Release) -> dict[str, Any]:
    targets = release.targets.select_related("environment").prefetch_related(
        "signoffs__user",
        "risk_acceptances__accepted_by",
        "overrides__overridden_by",
        "acknowledgements__acknowledged_by",
    )
    report: dict[str, Any] = {
        "release": {
            "project": release.project.slug,
            "version": release.version,
            "commit_sha": release.commit_sha,
            "revision": release.revision,
            "planned_start": _iso(release.planned_start),
            "created_by": release.created_by.username if release.created_by else None,
            "created_at": _iso(release.created_at),
        },
        "generated_at": timezone.now().isoformat(),
        "environments": [],
        "follow_ups": [
            {
                "text": f.text,
                "created_at": _iso(f.created_at),
                "resolved_at": _iso(f.resolved_at),
                "resolved_by": f.resolved_by.username if f.resolved_by else None,
                "resolution": f.resolution,
            }
            for f in release.follow_ups.select_related("resolved_by")
        ],
    }
    report["deployments"] = deployment_records(release)
    for target in targets:
        runs = [run_report(run) for run in target.runs.all()]
        report["environments"].append(
            {
                "environment": target.environment.name,
                "status": target.status,
                "deployed_commit": target.deployed_commit,
                "signoffs": [
                    {
                        "role": s.role,
                        "user": s.user.username,
                        "decision": s.decision,
                        "comment": s.comment,
                        "at": _iso(s.created_at),
                        "stale_at": _iso(s.stale_at),
                        "stale_reason": s.stale_reason,
                        "withdrawn_at": _iso(s.withdrawn_at),
                    }
                    for s in target.signoffs.all()
                ],
                "risk_acceptances": [
                    {
                        "item": a.item_text,
                        "by": a.accepted_by.username,
                        "reason": a.reason,
                        "expires_at": _iso(a.expires_at),
                        "at": _iso(a.created_at),
                        "revoked_at": _iso(a.revoked_at),
                    }
                    for a in target.risk_acceptances.all()
                ],
                "acknowledgements": [
                    {
                        "item": a.item_text,
                        "by": a.acknowledged_by.username,
                        "at": _iso(a.created_at),
                    }
                    for a in target.acknowledgements.all()
                ],
                "overrides": [
                    {
                        "by": o.overridden_by.username,
                        "reason": o.reason,
                        "at": _iso(o.created_at),
                        "reasons_overridden": o.reasons,
                    }
                    for o in target.overrides.all()
                ],
                "checklist_runs": runs,
            }
        )
    return report


def _user(user) -> str | None:  # noqa: ANN001
    return user.username if user is not None else None


def _images(steps: list[DeploymentStep]) -> dict[str, dict[str, str]]:
    """{service: {"before", "after"}}: the image each service ran before (the snapshot step
    read it) and after (the apply step set it)."""
    images: dict[str, dict[str, str]] = {}
    for step in steps:
        detail = step.detail or {}
        entry = images.setdefault(step.service_name, {"before": "", "after": ""})
        if detail.get("image_before"):
            entry["before"] = str(detail["image_before"])
        if detail.get("image_after"):
            entry["after"] = str(detail["image_after"])
    return images


def deployment_records(release: Release) -> list[dict[str, Any]]:
    """Every deployment of the release (rollbacks included), oldest first, as it is recorded."""
    deployments = (
        Deployment.objects.filter(release=release)
        .select_related("environment", "requested_by", "override__overridden_by")
        .prefetch_related("steps")
        .order_by("id")
    )
    records = []
    for d in deployments:
        steps = sorted(d.steps.all(), key=lambda s: (s.tier, s.service_name, s.pk))
        override = d.override
        records.append(
            {
                "id": d.pk,
                "kind": d.kind,
                "environment": d.environment.name,
                "commit_sha": d.commit_sha,
                "version": d.version,
                "strategy": d.strategy,
                "status": d.status,
                "reason": d.reason,
                "requested_by": _user(d.requested_by),
                "created_at": _iso(d.created_at),
                "started_at": _iso(d.started_at),
                "finished_at": _iso(d.finished_at),
                "rollback_of": d.rollback_of_id,
                "override": {
                    "by": _user(override.overridden_by),
                    "reason": override.reason,
                    "at": _iso(override.created_at),
                    "reasons_overridden": override.reasons,
                }
                if override is not None
                else None,
                # Stored when the deployment was requested, not re-derived now.
                "decision_at_start": d.decision_snapshot or None,
                "images": _images(steps),
                "steps": [
                    {
                        "service": s.service_name,
                        "tier": s.tier,
                        "kind": s.kind,
                        "status": s.status,
                        "started_at": _iso(s.started_at),
                        "finished_at": _iso(s.finished_at),
                        "message": s.message,
                    }
                    for s in steps
                ],
            }
        )
    return records


def release_timeline(release: Release) -> list[dict[str, Any]]:
    """The release's timeline: its own events, its checklist runs' and its deployments'."""
    run_topics = [
        f"run:{pk}"
        for pk in release.targets.values_list("runs", flat=True).order_by()
        if pk is not None
    ]
    deployment_topics = [
        f"deployment:{pk}" for pk in release.deployments.values_list("pk", flat=True)
    ]
    events = (
        AuditEvent.objects.filter(
            Q(topic__in=[release.topic, *run_topics])
            | Q(topic__in=deployment_topics, verb__in=DEPLOYMENT_TIMELINE_VERBS)
        )
        .select_related("actor")
        .order_by("id")
    )
    return [
        {
            "id": e.pk,
            "at": _iso(e.created_at),
            "actor": _user(e.actor) or "system",
            "topic": e.topic,
            "verb": e.verb,
            "text": str(describe_event(e)),
            "before": e.before,
            "after": e.after,
        }
        for e in events
    ]


def _markdown(report: dict[str, Any]) -> str:
    r = report["release"]
    lines = [
        f"# Compliance report: {r['project']} {r['version']}",
        "",
        f"- Commit: `{r['commit_sha']}` (revision {r['revision']})",
        f"- Planned start: {r['planned_start'] or 'not set'}",
        f"- Created by {r['created_by'] or 'unknown'} at {r['created_at']}",
        f"- Report generated at {report['generated_at']}",
        "",
    ]
    for env in report["environments"]:
        lines += [f"## {env['environment']} — {env['status'].replace('_', ' ')}", ""]
        lines += ["### Sign-offs", ""]
        if not env["signoffs"]:
            lines.append("None.")
        for s in env["signoffs"]:
            state = (
                f" — stale since {s['stale_at']}: {s['stale_reason']}"
                if s["stale_at"]
                else f" — withdrawn {s['withdrawn_at']}"
                if s["withdrawn_at"]
                else ""
            )
            comment = f": {s['comment']}" if s["comment"] else ""
            lines.append(
                f"- {s['role']}: {s['user']} {s['decision']}d at {s['at']}{comment}{state}"
            )
        for title, key, fmt in (
            (
                "Risk acceptances",
                "risk_acceptances",
                lambda a: (
                    f"- {a['item']} — accepted by {a['by']} at {a['at']}, "
                    f"until {a['expires_at']}: {a['reason']}"
                    + (f" (revoked {a['revoked_at']})" if a["revoked_at"] else "")
                ),
            ),
            (
                "Warning acknowledgements",
                "acknowledgements",
                lambda a: f"- {a['item']} — {a['by']} at {a['at']}",
            ),
            (
                "Overrides (break-glass)",
                "overrides",
                lambda o: (
                    f"- **{o['by']} overrode a no-go at {o['at']}: {o['reason']}** "
                    "(the decision said: "
                    + "; ".join(r["message"] for r in o["reasons_overridden"])
                    + ")"
                ),
            ),
        ):
            lines += ["", f"### {title}", ""]
            lines += [fmt(x) for x in env[key]] or ["None."]
        for report_of_run in env["checklist_runs"]:
            # run_report nests the run's own fields under "run", beside its items.
            run = report_of_run["run"]
            progress = report_of_run["progress"]
            lines += [
                "",
                f"### Checklist: {run['title']}",
                "",
                f"Template {run['template']} v{run['template_version']}, {run['status']}, "
                f"{progress['finished']} of {progress['total']} items finished.",
                "",
            ]
            for item in report_of_run["items"]:
                mark = {"done": "x", "na": "-"}.get(item["state"], " ")
                severity = f" [{item['severity'].upper()}]" if item["severity"] != "none" else ""
                who = f" — {item['done_by']} at {item['done_at']}" if item["done_by"] else ""
                na = f" (N/A: {item['na_reason']})" if item["state"] == "na" else ""
                lines.append(f"- [{mark}]{severity} {item['text']}{na}{who}")
                for ev in item["evidence"]:
                    source = (
                        ev["url"]
                        if ev["kind"] == "link"
                        else f"{ev['size']} bytes"
                        if ev["size"]
                        else ev["kind"]
                    )
                    lines.append(
                        f"  - evidence: {ev['name']} ({source}), "
                        f"by {ev['uploaded_by'] or 'unknown'} at {ev['uploaded_at']}"
                    )
        lines.append("")
    lines += ["## Deployments", ""]
    if not report["deployments"]:
        lines.append("None.")
    for d in report["deployments"]:
        lines += [
            f"### Deployment #{d['id']}: {d['kind']} {d['version']} to {d['environment']} — "
            f"{d['status'].replace('_', ' ')}",
            "",
            f"- Commit: `{d['commit_sha'] or 'unknown'}`",
            f"- Requested by {d['requested_by'] or 'the system'} at {d['created_at']}; "
            f"started {d['started_at'] or 'never'}, finished {d['finished_at'] or 'not yet'}",
        ]
        if d["reason"]:
            lines.append(f"- Reason: {d['reason']}")
        if d["override"]:
            o = d["override"]
            lines.append(f"- **Override by {o['by']} at {o['at']}: {o['reason']}**")
        decision = d["decision_at_start"]
        if decision:
            said = "; ".join(r["message"] for r in decision.get("reasons", [])) or "nothing"
            lines.append(
                f"- Decision when it started ({decision.get('at')}): "
                f"{decision.get('decision', '?').upper()} — no-go reasons: {said}"
            )
        for service, image in d["images"].items():
            lines.append(f"- {service}: {image['before'] or '?'} → {image['after'] or '?'}")
        lines += ["", "| Service | Tier | Step | Outcome | Message |", "|---|---|---|---|---|"]
        for st in d["steps"]:
            message = st["message"].replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| {st['service']} | {st['tier']} | {st['kind']} | {st['status']} | {message} |"
            )
        lines.append("")
    if report["follow_ups"]:
        lines += ["## Follow-ups", ""]
        for f in report["follow_ups"]:
            done = (
                f" — resolved by {f['resolved_by']}: {f['resolution']}" if f["resolved_at"] else ""
            )
            lines.append(f"- {f['text']}{done}")
    return "\n".join(lines) + "\n"


def _timeline_markdown(release: Release, timeline: list[dict[str, Any]]) -> str:
    lines = [f"# Timeline of {release.project.slug} {release.version}", ""]
    lines += [f"- {e['at']} {e['actor']}: {e['text']}" for e in timeline] or ["Nothing yet."]
    return "\n".join(lines) + "\n"


def sign(manifest: bytes) -> str:
    """The manifest's signature with this instance's key (SECRET_KEY, salted for bundles)."""
    return salted_hmac(
        SIGNATURE_SALT, manifest, secret=settings.SECRET_KEY, algorithm="sha256"
    ).hexdigest()


def manifest_of(files: dict[str, bytes]) -> bytes:
    lines = [f"{hashlib.sha256(data).hexdigest()}  {name}" for name, data in sorted(files.items())]
    return ("\n".join(lines) + "\n").encode()


def build_bundle(release: Release) -> bytes:
    report = release_report(release)
    timeline = release_timeline(release)
    files: dict[str, bytes] = {
        "report.json": json.dumps(report, indent=2, default=str).encode(),
        "report.md": _markdown(report).encode(),
        "timeline.json": json.dumps(timeline, indent=2, default=str).encode(),
        "timeline.md": _timeline_markdown(release, timeline).encode(),
    }
    for record in report["deployments"]:
        files[f"deployments/deployment-{record['id']}.json"] = json.dumps(
            record, indent=2, default=str
        ).encode()
    for target in release.targets.select_related("environment"):
        for run in target.runs.all():
            for name, handle in evidence_files(run):
                # evidence_files names are "evidence/<item>/<id>-<name>", unique in a run.
                path = name.removeprefix("evidence/")
                with handle:
                    files[f"evidence/{target.environment.name}/run-{run.pk}/{path}"] = handle.read()
    manifest = manifest_of(files)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(MANIFEST, manifest)
        archive.writestr(SIGNATURE, f"hmac-sha256:{sign(manifest)}\n")
    return buffer.getvalue()


@dataclass
class Verification:
    problems: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(source: Any) -> Verification:
    """Check a bundle (a path or a binary file) without the database or the network: the
    manifest's signature, then every file against the manifest. Each problem names its file."""
    result = Verification()
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        result.problems.append(f"not a readable zip file: {exc}")
        return result
    with archive:
        names = set(archive.namelist())
        for required in (MANIFEST, SIGNATURE):
            if required not in names:
                result.problems.append(f"{required}: missing from the bundle")
        if not result.ok:
            return result
        manifest = archive.read(MANIFEST)
        signature = archive.read(SIGNATURE).decode("ascii", "replace").strip()
        expected = f"hmac-sha256:{sign(manifest)}"
        if not hmac.compare_digest(signature, expected):
            result.problems.append(
                f"{MANIFEST}: its signature does not match (the manifest was changed, or the "
                "bundle was signed by another instance)"
            )
        listed: dict[str, str] = {}
        for line in manifest.decode("utf-8", "replace").splitlines():
            digest, _, name = line.partition("  ")
            if not name or len(digest) != 64:
                result.problems.append(f"{MANIFEST}: malformed line {line[:80]!r}")
                continue
            listed[name] = digest
        for name, digest in sorted(listed.items()):
            if name not in names:
                result.problems.append(f"{name}: listed in the manifest but missing")
                continue
            result.checked += 1
            if hashlib.sha256(archive.read(name)).hexdigest() != digest:
                result.problems.append(f"{name}: modified (its SHA-256 differs from the manifest)")
        for name in sorted(names - set(listed) - {MANIFEST, SIGNATURE}):
            result.problems.append(f"{name}: not listed in the manifest (added after signing)")
    return result
