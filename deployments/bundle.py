"""The compliance bundle of a release: one zip with a report (Markdown and JSON) of checklist states
(who ticked what, when), sign-offs, overrides, risk acceptances, and the evidence files."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from django.utils import timezone

from checklists.selectors import evidence_files, run_report

from .models import Release


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
    for target in targets:
        runs = [run_report(run) for run in target.runs.all()]
        report["environments"].append(
            {
                "environment": target.environment.name,
                "status": target.status,
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
    if report["follow_ups"]:
        lines += ["## Follow-ups", ""]
        for f in report["follow_ups"]:
            done = (
                f" — resolved by {f['resolved_by']}: {f['resolution']}" if f["resolved_at"] else ""
            )
            lines.append(f"- {f['text']}{done}")
    return "\n".join(lines) + "\n"


def build_bundle(release: Release) -> bytes:
    report = release_report(release)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("report.json", json.dumps(report, indent=2, default=str))
        archive.writestr("report.md", _markdown(report))
        for target in release.targets.select_related("environment"):
            for run in target.runs.all():
                for name, handle in evidence_files(run):
                    # evidence_files names are "evidence/<item>/<id>-<name>", unique in a run.
                    path = name.removeprefix("evidence/")
                    with handle:
                        archive.writestr(
                            f"evidence/{target.environment.name}/run-{run.pk}/{path}",
                            handle.read(),
                        )
    return buffer.getvalue()
