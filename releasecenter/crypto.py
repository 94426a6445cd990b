"""Encryption of secrets stored at rest (cluster credentials, secret check headers).

Fernet with RELEASECENTER_ENCRYPTION_KEY. Without it (the embedded default) the key is derived from
SECRET_KEY, so a demo works with no setup; production sets its own key so that rotating one does
not silently make the other's ciphertexts unreadable.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.db import models


class DecryptionError(Exception):
    """A stored secret could not be decrypted: the encryption key changed."""


def _fernet() -> Fernet:
    key = settings.RELEASECENTER_ENCRYPTION_KEY
    if not key:
        key = base64.urlsafe_b64encode(hashlib.sha256(settings.SECRET_KEY.encode()).digest())
    return Fernet(key)


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError("A stored secret cannot be decrypted with the current key.") from exc


class EncryptedTextField(models.TextField):
    """A text column holding Fernet ciphertext. Python code sees plaintext; the database and any
    dump of it see only ciphertext. Never render its value back to a user."""

    def from_db_value(self, value, expression, connection):  # noqa: ANN001, ANN201
        if value in (None, ""):
            return value
        return decrypt(value)

    def get_prep_value(self, value):  # noqa: ANN001, ANN201
        value = super().get_prep_value(value)
        if value in (None, ""):
            return value
        return encrypt(value)
