"""python manage.py export_runbook TEMPLATE_ID [--template-version N]

Prints the template as Markdown; importing that Markdown gives the same sections, items (text,
severity, pre-checked, sub-items, due offsets, owner role, evidence required), commands and
sign-off roles.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from checklists import drafts
from checklists.lib.markdown_export import export_runbook
from checklists.models import ChecklistTemplate


class Command(BaseCommand):
    help = "Print a checklist template as Markdown."

    def add_arguments(self, parser):  # noqa: ANN001, ANN201
        parser.add_argument("template_id", type=int)
        parser.add_argument(
            "--template-version", type=int, help="A version number (default: the current one)."
        )

    def handle(self, *args, template_id: int, **options):  # noqa: ANN002, ANN003, ANN201
        template = (
            ChecklistTemplate.objects.filter(pk=template_id)
            .select_related("current_version")
            .first()
        )
        if template is None:
            raise CommandError(f"No checklist template {template_id}.")
        version = template.current_version
        if options.get("template_version"):
            version = template.versions.filter(number=options["template_version"]).first()
            if version is None:
                raise CommandError(
                    f"Template {template_id} has no version {options['template_version']}."
                )
        self.stdout.write(export_runbook(drafts.to_parsed(drafts.load(version))), ending="")
