"""What the worker does to a run's output before it is stored: secret masking, and the
exception that failed the run (for its reason). Pure functions; no I/O."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_LEN = 4
"""Secret values (and encodings) shorter than this are not masked: masking `1` or `yes`
in every line would hide more noise than secret (CI systems skip short values too)."""


def secret_variants(value: str) -> set[str]:
    """The forms of a secret a job is likely to print: as is, each of its lines, base64
    (standard and URL-safe, of the value and of the value with the newline `echo` adds),
    URL-quoted and JSON-escaped. Base64 is matched with and without its `=` padding."""
    forms = {value, *value.splitlines()}
    raw = value.encode()
    for data in (raw, raw + b"\n"):
        for encoded in (base64.b64encode(data), base64.urlsafe_b64encode(data)):
            forms |= {encoded.decode(), encoded.decode().rstrip("=")}
    forms |= {quote(value, safe=""), quote(value), quote_plus(value)}
    forms.add(json.dumps(value)[1:-1])
    forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    return {f for f in forms if len(f.strip()) >= MIN_SECRET_LEN}


class Masker:
    """Replaces every secret value, in any of its `secret_variants`, with `***`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for value in secrets:
            if len(value) >= MIN_SECRET_LEN:
                forms |= secret_variants(value)
        # the longest first, so a value inside a longer form is not masked half
        ordered = sorted(forms, key=lambda f: (-len(f), f))
        self._re = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._re is not None

    def __call__(self, text: str) -> str:
        return text if self._re is None else self._re.sub(MASK, text)


TRACEBACK_START = ("Traceback (most recent call last):", "Exception Group Traceback")
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")
_CHAIN = (
    "The above exception was the direct cause of the following exception:",
    "During handling of the above exception, another exception occurred:",
)
MAX_REASON = 500
"""Characters of an exception's type and message kept in a run's failure reason."""
_MAX_MESSAGE_LINES = 20


class ExceptionTracker:
    """Follows one output stream line by line and keeps the last traceback's exception
    (`Type: message`, the module path dropped), the way Python prints it at exit."""

    def __init__(self) -> None:
        self._in_traceback = False
        self._message: list[str] | None = None  # the exception being read, line by line
        self.last: str | None = None

    def feed(self, line: str) -> None:
        stripped = line.strip()
        if line.lstrip(" +|").startswith(TRACEBACK_START):
            self._in_traceback, self._message = True, None
            return
        if self._in_traceback:
            if not line or line[0].isspace():
                return  # a frame, its code, or carets
            self._in_traceback = False
            m = _EXC_LINE.match(line)
            if m is None:
                return
            name = m.group(1).rsplit(".", 1)[-1]
            self._message = [name + (f": {m.group(2)}" if m.group(2) else "")]
            self._set()
            return
        if self._message is not None:
            if stripped in _CHAIN:
                self._message = None  # the next traceback is the one that ended the run
            elif len(self._message) >= _MAX_MESSAGE_LINES:
                # output went on after it: a traceback printed and handled, not the exit's
                self._message, self.last = None, None
            elif stripped:
                # a message of several lines (dlt's PipelineStepFailed names the cause below)
                self._message.append(stripped)
                self._set()

    def _set(self) -> None:
        assert self._message is not None
        text = " ".join(self._message)
        self.last = text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"
