"""The one base of Headwater's own errors.

Each error class names a stable `code`: the API answers it as the error's `code`, and
callers may match on it instead of on a message. Classes keep the built-in base they had
(`ValueError`, `LookupError`) beside this one, so existing `except` clauses still hold.
"""

from __future__ import annotations


class HeadwaterError(Exception):
    """An error of Headwater's own, with a stable machine-readable `code`."""

    code: str = "headwater_error"
