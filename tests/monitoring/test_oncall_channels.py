"""Notification channels: signed webhooks a receiver can verify, the address guard, secrets that
stay secret, every try recorded, a failing channel on the project page, and delivery by a real
worker on the notifications queue. Every receiver is on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.db import connection

from monitoring.oncall import channels
from monitoring.oncall.models import ChannelMessage, DeliveryAttempt, NotificationChannel
from releasecenter.models import AuditEvent

from .support import allow

SECRET = "s3cret-signing-key-0123456789"


class Receiver:
    """A webhook receiver that checks signatures the way the docs tell receivers to."""

    def __init__(self, secret: str = SECRET, status: int = 200) -> None:
        self.secret = secret
        self.status = status
        self.received: list[dict] = []
        self.verdicts: list[bool] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ok = channels.verify_signature(
                    receiver.secret,
                    body,
                    self.headers.get("X-ReleaseCenter-Signature", ""),
                    self.headers.get("X-ReleaseCenter-Timestamp", ""),
                )
                receiver.verdicts.append(ok)
                receiver.received.append(
                    {"body": body, "headers": dict(self.headers.items()), "path": self.path}
                )
                code = receiver.status if ok else 401
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def create(client, **body):  # noqa: ANN001, ANN003, ANN201
    return client.post("/api/v1/projects/shop/notification-channels/", body, format="json")


def test_a_delivered_webhook_is_signed_and_the_receiver_verifies_it(
    api_client_for, personas, receiver
):
    allow(personas.staging)
    client = api_client_for(personas.lead)
    created = create(
        client,
        name="pager",
        kind="webhook",
        url=receiver.url(),
        secret=SECRET,
        address_environment="staging",
    )
    assert created.status_code == 201, created.json()
    assert "secret" not in created.json() and "url" not in created.json()
    channel = NotificationChannel.objects.get()
    [message] = channels.send(
        personas.project,
        event="test",
        subject="INC-1 paged",
        text="Someone look at INC-1",
        data={"incident": 1},
    )
    assert channels.deliver(message.pk) is True
    assert receiver.verdicts == [True]
    [request] = receiver.received
    body = json.loads(request["body"])
    assert body["subject"] == "INC-1 paged" and body["project"] == "shop"
    assert request["headers"]["X-ReleaseCenter-Signature"].startswith("sha256=")
    # Nothing secret travels: not the signing secret, not the URL.
    assert SECRET not in request["body"].decode() and receiver.url() not in request["body"].decode()
    # The signature covers the timestamp: the same body with another timestamp fails, and an
    # old capture replayed later is refused.
    stamp = request["headers"]["X-ReleaseCenter-Timestamp"]
    signature = request["headers"]["X-ReleaseCenter-Signature"]
    assert not channels.verify_signature(SECRET, request["body"], signature, str(int(stamp) + 1))
    assert not channels.verify_signature(
        SECRET, request["body"], signature, stamp, now=int(stamp) + 3600
    )
    assert not channels.verify_signature("another", request["body"], signature, stamp)
    [attempt] = DeliveryAttempt.objects.all()
    assert (attempt.ok, attempt.status_code, attempt.number) == (True, 200, 1)
    channel.refresh_from_db()
    assert channel.health == "ok"
    message.refresh_from_db()
    assert message.status == "sent"
    # A redelivered task sends nothing twice.
    assert channels.deliver(message.pk) is True
    assert len(receiver.received) == 1


def test_secrets_are_encrypted_at_rest_and_never_shown_back(api_client_for, personas, receiver):
    allow(personas.staging)
    client = api_client_for(personas.lead)
    created = create(
        client, name="gen", kind="webhook", url=receiver.url(), address_environment="staging"
    )
    generated = created.json()["generated_secret"]
    assert len(generated) >= 32
    listed = client.get("/api/v1/projects/shop/notification-channels/").json()
    text = json.dumps(listed)
    assert generated not in text and receiver.url() not in text
    assert listed[0]["url_set"] is True
    with connection.cursor() as cursor:
        cursor.execute("SELECT url, secret FROM monitoring_notificationchannel")
        stored_url, stored_secret = cursor.fetchone()
    assert generated not in stored_secret and "127.0.0.1" not in stored_url
    events = json.dumps(list(AuditEvent.objects.values("before", "after", "data")))
    assert generated not in events and receiver.url() not in events


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "webhook", "url": "http://127.0.0.1:9/hook"}, "url"),
        ({"kind": "webhook", "url": "http://169.254.169.254/latest/meta-data/"}, "url"),
        ({"kind": "slack", "url": "file:///etc/passwd"}, "url"),
        (
            {"kind": "webhook", "url": "http://127.0.0.1:9/", "address_environment": "moon"},
            "address_environment",
        ),
        ({"kind": "email", "emails": ["not an address"]}, "emails"),
        ({"kind": "pigeon"}, "kind"),
        ({"kind": "webhook", "url": "http://192.0.2.1/h", "secret": "short"}, "secret"),
    ],
)
def test_bad_channels_are_a_400_naming_the_field_and_write_nothing(
    api_client_for, personas, body, field
):
    response = create(api_client_for(personas.lead), name="bad", **body)
    assert response.status_code == 400, response.json()
    assert field in response.json()
    assert not NotificationChannel.objects.exists()
    assert not AuditEvent.objects.filter(verb__startswith="oncall.").exists()


def test_a_failing_channel_records_every_try_and_shows_on_the_project_page(
    api_client_for, personas, client, caplog
):
    allow(personas.staging)
    with Receiver(status=503) as down:
        create(
            api_client_for(personas.lead),
            name="flaky",
            kind="webhook",
            url=down.url(),
            secret=SECRET,
            address_environment="staging",
        )
        [message] = channels.send(
            personas.project, event="test", subject="hello", text="hello", data={}
        )
        results = [channels.deliver(message.pk) for _ in range(channels.MAX_ATTEMPTS + 1)]
    assert results == [False] * (channels.MAX_ATTEMPTS - 1) + [True, True]
    assert "HTTP 503" in caplog.text and down.url() not in caplog.text and SECRET not in caplog.text
    tries = list(DeliveryAttempt.objects.order_by("number"))
    assert [(t.number, t.status_code, t.ok) for t in tries] == [
        (n, 503, False) for n in range(1, channels.MAX_ATTEMPTS + 1)
    ]
    assert all(t.error == "HTTP 503" for t in tries)
    message.refresh_from_db()
    assert message.status == "failed"
    client.force_login(personas.viewer)
    overview = client.get("/p/shop/").content.decode()
    assert 'data-failing-channel="flaky"' in overview and "HTTP 503" in overview
    page = client.get("/p/shop/oncall/").content.decode()
    assert page.count("HTTP 503") >= channels.MAX_ATTEMPTS
    assert down.url() not in page
    assert AuditEvent.objects.filter(verb="oncall.channel_failing").count() == 1


def test_email_channel_uses_django_mail(api_client_for, personas):
    response = create(
        api_client_for(personas.lead), name="mail", kind="email", emails=["oncall@acme.example"]
    )
    assert response.status_code == 201
    [message] = channels.send(
        personas.project, event="test", subject="INC-2 paged", text="body", data={}
    )
    assert channels.deliver(message.pk) is True
    assert [m.subject for m in mail.outbox] == ["INC-2 paged"]
    assert mail.outbox[0].to == ["oncall@acme.example"]


def test_a_real_worker_delivers_after_commit(celery_worker, personas, receiver):
    from django.db import transaction

    allow(personas.staging)
    channels.create_channel(
        personas.lead,
        personas.membership(personas.lead),
        name="pager",
        kind="webhook",
        url=receiver.url(),
        secret=SECRET,
        address_environment="staging",
    )
    with transaction.atomic():
        channels.send(personas.project, event="test", subject="via worker", text="x", data={})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not receiver.received:
        time.sleep(0.2)
    assert receiver.verdicts == [True]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if ChannelMessage.objects.get().status == "sent":
            break
        time.sleep(0.2)
    assert ChannelMessage.objects.get().status == "sent"
