from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from releasecenter import services


class Command(BaseCommand):
    help = "Create an API token for a user and print it once (only its hash is stored)."

    def add_arguments(self, parser):  # noqa: ANN001, ANN201
        parser.add_argument("username")
        parser.add_argument("--name", required=True, help="What uses the token, e.g. 'CI deploy'.")

    def handle(self, *args, username: str, name: str, **options):  # noqa: ANN002, ANN003, ANN201
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user '{username}'.")
        try:
            _token, raw = services.create_api_token(user, name)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(raw)
