"""Standard Webhooks signatures: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``.

The same scheme OpenAI signs its webhooks with, decoded the way its SDK decodes a secret: a
``whsec_`` secret is base64 after the prefix, any other string is used as its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from streamq.core.settings import webhook_secret_key


def signature(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header's value for one delivery."""
    signed = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(webhook_secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, message_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The headers of one delivery: a fresh ``timestamp`` each try, the same ``message_id``."""
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }
