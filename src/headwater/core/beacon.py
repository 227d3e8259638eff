"""The beacon a run's dlt reports to: `RUNTIME__DLTHUB_DSN`, and the secret in it. Pure.

dlt PUTs its payloads to `{dsn}/trace`, `{dsn}/state` and `{dsn}/job_result` with
`requests`, which turns the DSN's `user:password@` into a Basic `Authorization`
header: the per-run secret travels as that password, never in the request path
(so never in access logs). The secret is an HMAC of the run id under a key derived
from the server's secret key, so nothing needs storing and it admits one run only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlsplit, urlunsplit

USER = "run"
PATH = "/telemetry/v1/workspaces/{ws}/job-runs/{run}/-beacon"


def derive_key(server_secret: bytes) -> bytes:
    """The beacon's own key, so a leaked run secret says nothing about the server secret."""
    return hmac.new(server_secret, b"headwater beacon v1", hashlib.sha256).digest()


def run_secret(key: bytes, run_id: str) -> str:
    return hmac.new(key, run_id.encode(), hashlib.sha256).hexdigest()


def check(key: bytes, run_id: str, secret: str) -> bool:
    return hmac.compare_digest(run_secret(key, run_id).encode(), secret.encode())


def dsn(base_url: str, ws_id: str, run_id: str, key: bytes) -> str:
    """`http://run:<secret>@host:port/telemetry/v1/workspaces/<ws>/job-runs/<run>/-beacon`."""
    return dsn_with_secret(base_url, ws_id, run_id, run_secret(key, run_id))


def dsn_with_secret(base_url: str, ws_id: str, run_id: str, secret: str) -> str:
    """The beacon of a run on a remote worker: the server hands out the run's secret, the
    worker puts it on the server's URL as it reaches the server."""
    parts = urlsplit(base_url)
    netloc = f"{USER}:{secret}@{parts.netloc}"
    path = parts.path.rstrip("/") + PATH.format(ws=ws_id, run=run_id)
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def secret_from_header(authorization: str) -> str | None:
    """The secret of `Basic base64(run:<secret>)` (what requests sends) or `Bearer <secret>`."""
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    _user, sep, password = decoded.partition(":")
    return password if sep and password else None
