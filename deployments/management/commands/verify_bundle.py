"""Check a compliance bundle offline: ``python manage.py verify_bundle FILE``.

Needs no database and no network, only this instance's SECRET_KEY (the bundle's manifest is
signed with it). Exits 0 and says how many files matched, or fails naming every file that was
changed, added or removed, and a manifest whose signature does not match.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from deployments.bundle import verify


class Command(BaseCommand):
    help = "Verify a release's compliance bundle (zip) against its signed MANIFEST.sha256."
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("file", help="The compliance bundle (.zip) to check.")

    def handle(self, *args, **options) -> None:  # noqa: ANN002, ANN003
        path = options["file"]
        result = verify(path)
        if not result.ok:
            for problem in result.problems:
                self.stderr.write(f"{path}: {problem}")
            raise CommandError(
                f"{path} does not verify: {len(result.problems)} problem"
                f"{'s' if len(result.problems) != 1 else ''} (first: {result.problems[0]})"
            )
        self.stdout.write(f"{path}: OK — {result.checked} files match the signed manifest.")
