"""Retries: whether a run that ended badly gets another attempt, and after how long.

A retry is a new attempt of the same run (same id and number): the run goes back to
`pending` until its `not_before`, and chains and automations see only its final outcome.
Pure: the outcome, the attempt number, the policy and a random draw in; a decision out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RETRYABLE = ("failed", "crashed", "timed_out")
"""What can be retried; a cancelled run never is."""
CRASH_REASON = "runtime lost"
WORKER_LOST = "worker lost"
"""A remote worker stopped renewing the run's lease (`core/leases.WORKER_LOST`)."""
TIMEOUT_REASON = "timed out after"


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 0
    """Attempts after the first."""
    delay_s: float = 30.0
    backoff: float = 2.0
    """Each wait is `backoff` times the one before: 30 s, 60 s, 120 s."""
    retry_on: tuple[str, ...] = RETRYABLE

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None) -> RetryPolicy | None:
        """The policy a job's `headwater.toml` settings ask for (None: no retries)."""
        if not settings or not settings.get("retries"):
            return None
        return cls(
            retries=int(settings["retries"]),
            delay_s=float(settings.get("retry_delay", 30.0)),
            backoff=float(settings.get("retry_backoff", 2.0)),
            retry_on=tuple(settings.get("retry_on") or RETRYABLE),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "retries": self.retries,
            "delay_s": self.delay_s,
            "backoff": self.backoff,
            "retry_on": list(self.retry_on),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RetryPolicy | None:
        if not data:
            return None
        return cls(
            int(data["retries"]),
            float(data["delay_s"]),
            float(data["backoff"]),
            tuple(data["retry_on"]),
        )


def outcome_kind(status: str, reason: str | None) -> str | None:
    """`failed`, `crashed` or `timed_out` for a run that ended badly; None otherwise."""
    if status != "failed":
        return None
    text = reason or ""
    # the runtime died under it: the server's (`up`), or a remote worker's
    if text.startswith((CRASH_REASON, WORKER_LOST)):
        return "crashed"
    # a run's own timeout (`core/outcomes`), or a dbt Cloud watch's
    if text.startswith(TIMEOUT_REASON) or text.startswith("timeout:"):
        return "timed_out"
    return "failed"


def retry_delay(
    policy: RetryPolicy | None, attempt: int, status: str, reason: str | None, draw: float
) -> float | None:
    """Seconds until the next attempt of a run whose attempt `attempt` (1-based) ended so;
    None: no retry (no policy, none left, or not an outcome it retries). `draw` in [0, 1)
    gives the jitter: the wait is between 75 % and 125 % of the backoff step."""
    kind = outcome_kind(status, reason)
    if policy is None or kind is None or kind not in policy.retry_on:
        return None
    if attempt > policy.retries:
        return None
    step = policy.delay_s * policy.backoff ** (attempt - 1)
    return step * (0.75 + draw / 2)
