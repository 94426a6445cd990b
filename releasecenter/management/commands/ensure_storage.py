from django.core.management.base import BaseCommand, CommandError

from releasecenter import storage


class Command(BaseCommand):
    help = "Create the evidence and snapshot store (the private Azure container) if missing."

    def handle(self, *args, **options):  # noqa: ANN002, ANN003, ANN201
        try:
            self.stdout.write(storage.ensure_container())
        except Exception as exc:  # noqa: BLE001 - any failure here stops a deployment's start
            raise CommandError(
                f"The file store is not usable: {type(exc).__name__}: {exc}"
            ) from exc
