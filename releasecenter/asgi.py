"""ASGI entry point: uvicorn serves pages, the API and the server-sent event streams."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "releasecenter.settings")
application = get_asgi_application()
