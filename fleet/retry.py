"""The one retry policy for transient faults, shared by scoring and by callback delivery.

Why one module: the retry storm of issue 8 came from a retry count that was reset on release, so
backoff never grew and retries never stopped. Here the state lives on the row (a transient-failure
count, when the failures started, the next attempt time); this module only decides, from that
state, when the next attempt is due or that the work is dead-lettered because it has been failing
for longer than `max_age_s` (code `RETRY_WINDOW_EXHAUSTED`). It is pure (no database, no clock of
its own), so callers and tests pass `now` in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

RETRY_WINDOW_EXHAUSTED = "retry_window_exhausted"


def as_utc(ts: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns; they are UTC."""
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class RetryDecision:
    """Either retry at `next_attempt_at` (after `delay_s`), or give up (`give_up`, with `message`)."""

    give_up: bool
    failures: int
    failing_since: datetime
    delay_s: float = 0.0
    next_attempt_at: datetime | None = None
    message: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with equal jitter, capped, dead-lettered by age.

    Equal jitter (half fixed, half random) keeps a floor under each delay, so the n-th retry waits
    at least `base_s * 2**(n-2)` (up to the cap): a fleet that failed together spreads out, and
    the backoff provably grows, unlike full jitter whose delay can always be ~0.
    """

    base_s: float = 2.0
    cap_s: float = 300.0
    max_age_s: float = 3600.0

    def delay_s(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the `failures`-th consecutive transient failure (1-based)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** max(0, failures - 1))
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)

    def after_failure(self, failures_before: int, failing_since: datetime | None, now: datetime,
                      rng: random.Random | None = None) -> RetryDecision:
        """The decision after one more transient failure of work that had `failures_before` of them,
        failing since `failing_since` (None: this is the first)."""
        failures = failures_before + 1
        since = as_utc(failing_since) if failing_since is not None else now
        age = (now - since).total_seconds()
        if age >= self.max_age_s:
            return RetryDecision(True, failures, since, message=(
                f"{RETRY_WINDOW_EXHAUSTED}: transient faults for {age:.0f} s ({failures} failures), "
                f"longer than the {self.max_age_s:.0f} s retry window"))
        delay = self.delay_s(failures, rng)
        return RetryDecision(False, failures, since, delay_s=delay, next_attempt_at=now + timedelta(seconds=delay))
