"""python manage.py import_runbook PATH --project SLUG [--name NAME] [--kind KIND] [--json]

The same importer as the upload page and the API (checklists.services.import_runbook). With
--json it prints one JSON object: template_id, name, sections, items, commands, gates
{no_go, conditional, warning} and signoff_roles, counted over the whole template.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from checklists import services
from checklists.lib.markdown_import import MAX_RUNBOOK_BYTES
from checklists.models import ChecklistTemplate
from releasecenter.models import Project


class Command(BaseCommand):
    help = "Import a Markdown runbook as a checklist template of a project."

    def add_arguments(self, parser):  # noqa: ANN001, ANN201
        parser.add_argument("path", help="The Markdown file.")
        parser.add_argument("--project", required=True, help="The project's slug.")
        parser.add_argument("--name", help="The template's name (default: the runbook's title).")
        parser.add_argument("--kind", choices=ChecklistTemplate.Kind.values, help="Its kind.")
        parser.add_argument("--user", help="Record the import as done by this user.")
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")

    def handle(self, *args, path: str, project: str, **options):  # noqa: ANN002, ANN003, ANN201
        file = Path(path)
        if not file.is_file():
            raise CommandError(f"No such file: {path}")
        size = file.stat().st_size
        if size > MAX_RUNBOOK_BYTES:
            raise CommandError(
                f"{path} is {size:,} bytes; the limit is {MAX_RUNBOOK_BYTES:,} bytes (1 MiB)."
            )
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"No project with the slug '{project}'.")
        actor = None
        if options.get("user"):
            actor = get_user_model().objects.filter(username=options["user"]).first()
            if actor is None:
                raise CommandError(f"No user '{options['user']}'.")
        try:
            outcome = services.import_runbook(
                actor,
                target,
                file.read_bytes(),
                name=options.get("name"),
                kind=options.get("kind"),
                filename=file.name,
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        except services.Conflict as exc:
            raise CommandError(str(exc)) from exc
        for warning in outcome.warnings:
            self.stderr.write(f"warning: {warning}")
        summary = outcome.summary
        if options["json"]:
            self.stdout.write(json.dumps(summary, ensure_ascii=False))
            return
        gates = summary["gates"]
        self.stdout.write(
            f"Imported '{summary['name']}' as template {summary['template_id']}: "
            f"{services.counts_sentence(summary)}; gates: {gates['no_go']} NO-GO, "
            f"{gates['conditional']} CONDITIONAL, {gates['warning']} WARNING; "
            f"sign-off roles: {', '.join(summary['signoff_roles']) or 'none'}."
        )
