"""The one base of Headwater's own errors.

Each error class names a stable `code`: the API answers it as the error's `code`, and
callers may match on it instead of on a message. A class whose errors are the client's
doing also names the HTTP `status` the API answers them with: one handler in `api/app.py`
turns any of them that reaches it into the API's error body, so routes translate only
where they add to the message. Classes keep the built-in base they had (`ValueError`,
`LookupError`) beside this one, so existing `except` clauses still hold.
"""

from __future__ import annotations


class HeadwaterError(Exception):
    """An error of Headwater's own, with a stable machine-readable `code`."""

    code: str = "headwater_error"
    status: int | None = None
    """The HTTP status the API answers with (a 4xx); `None`: not the client's doing, a 500
    whose details go to the server log only."""
    extra: object = None
    """The API answer's `extra`: `None`, or what helps the client fix it (`{candidates}`)."""
