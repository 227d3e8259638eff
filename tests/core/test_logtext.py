"""Secret masking and the exception a failed run's reason names."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

from headwater.core.logtext import MASK, MAX_REASON, ExceptionTracker, Masker

SECRET = "p@ss w0rd/+?&é"


def test_a_secret_and_its_simple_encodings_are_masked() -> None:
    mask = Masker([SECRET])
    for form in (
        SECRET,
        base64.b64encode(SECRET.encode()).decode(),
        base64.b64encode(SECRET.encode() + b"\n").decode(),  # `echo "$S" | base64`
        base64.urlsafe_b64encode(SECRET.encode()).decode(),
        quote(SECRET, safe=""),
        quote(SECRET),
        quote_plus(SECRET),
        json.dumps(SECRET)[1:-1],
        json.dumps(SECRET, ensure_ascii=False)[1:-1],
    ):
        masked = mask(f"token={form};")
        assert SECRET not in masked and form not in masked, form
        assert masked.startswith(f"token={MASK}")


def test_each_line_of_a_multi_line_secret_is_masked() -> None:
    mask = Masker(["-----BEGIN KEY-----\nAAAAsecretbody\n-----END KEY-----"])
    assert mask("AAAAsecretbody") == MASK


def test_short_values_and_no_secrets_change_nothing() -> None:
    assert not Masker([])
    assert not Masker(["abc", ""])
    assert Masker(["abc"])("abc abc") == "abc abc"
    assert Masker(["abcd"])("x abcd y") == f"x {MASK} y"


def feed(text: str) -> ExceptionTracker:
    t = ExceptionTracker()
    for line in text.splitlines():
        t.feed(line)
    return t


TRACEBACK = """\
starting
Traceback (most recent call last):
  File "/x/job.py", line 3, in <module>
    main()
  File "/x/job.py", line 2, in main
    raise ValueError("boom")
    ^^^^^^^^^^^^^^^^^^^^^^^^
ValueError: boom
"""


def test_the_last_tracebacks_exception_is_kept_without_its_module() -> None:
    assert feed(TRACEBACK).last == "ValueError: boom"
    chained = TRACEBACK + (
        "\nThe above exception was the direct cause of the following exception:\n\n"
        "Traceback (most recent call last):\n"
        '  File "/x/pipeline.py", line 530, in extract\n'
        "    raise PipelineStepFailed(\n"
        "dlt.pipeline.exceptions.PipelineStepFailed: Pipeline execution failed at `step=extract`"
        " with exception:\n\n<class 'ValueError'>\nboom\n"
    )
    assert feed(chained).last == (
        "PipelineStepFailed: Pipeline execution failed at `step=extract` with exception:"
        " <class 'ValueError'> boom"
    )
    assert feed("KeyboardInterrupt\nTraceback (most recent call last):\n  x\nSystemExit").last == (
        "SystemExit"
    )


def test_no_traceback_or_a_handled_one_followed_by_more_output_names_nothing() -> None:
    assert feed("all fine\nValueError: not a traceback").last is None
    assert feed(TRACEBACK + "\n".join(f"line {i}" for i in range(30))).last is None


def test_a_long_message_is_cut() -> None:
    t = feed(f"Traceback (most recent call last):\n  x\nValueError: {'y' * 2000}")
    assert t.last is not None and len(t.last) == MAX_REASON and t.last.endswith("…")
