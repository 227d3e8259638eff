"""Headwater's webhook signature, the same both ways (webhooks it receives, and those its
automations send): `X-Headwater-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<raw body>">`, in Stripe's scheme. Pure: the time is passed in."""

from __future__ import annotations

import hashlib
import hmac


def hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The `X-Headwater-Signature` value of `body` sent at `timestamp`."""
    return f"t={timestamp},v1={hmac_hex(secret, f'{timestamp}.'.encode() + body)}"
