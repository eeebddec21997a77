"""The shared retry policy (fleet/retry.py): backoff grows with the failure count, stops at the
cap, and work failing for longer than the window is dead-lettered with the policy's code."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from fleet.retry import RETRY_WINDOW_EXHAUSTED, RetryPolicy

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)


def test_backoff_grows_with_the_failure_count_until_the_cap() -> None:
    policy = RetryPolicy(base_s=2.0, cap_s=300.0, max_age_s=3600.0)
    rng = random.Random(7)
    for failures in range(1, 20):
        ceiling = min(300.0, 2.0 * 2 ** (failures - 1))
        for _ in range(50):
            assert ceiling / 2 <= policy.delay_s(failures, rng) <= ceiling
    # the floor of the 9th retry is past the old 8 s ceiling, and the cap holds
    assert policy.delay_s(9, rng) >= 256.0 / 2 and policy.delay_s(40, rng) <= 300.0


def test_failures_accumulate_and_the_window_dead_letters_by_age() -> None:
    policy = RetryPolicy(base_s=2.0, cap_s=300.0, max_age_s=3600.0)
    first = policy.after_failure(0, None, NOW)
    assert not first.give_up and first.failures == 1 and first.failing_since == NOW
    assert first.next_attempt_at == NOW + timedelta(seconds=first.delay_s)
    later = NOW + timedelta(seconds=3599)
    tenth = policy.after_failure(9, first.failing_since, later)
    assert not tenth.give_up and tenth.failures == 10 and tenth.failing_since == NOW  # the start is kept
    assert 150.0 <= tenth.delay_s <= 300.0  # capped at 300 s, never below half the cap
    done = policy.after_failure(10, NOW, NOW + timedelta(seconds=3600))
    assert done.give_up and done.next_attempt_at is None and done.message.startswith(RETRY_WINDOW_EXHAUSTED)


def test_naive_timestamps_from_sqlite_count_as_utc() -> None:
    policy = RetryPolicy(max_age_s=60.0)
    naive_start = (NOW - timedelta(seconds=61)).replace(tzinfo=None)
    assert policy.after_failure(3, naive_start, NOW).give_up
    assert not policy.after_failure(3, naive_start + timedelta(seconds=2), NOW).give_up


def test_settings_keep_every_retry_wait_below_the_redis_visibility_timeout() -> None:
    """A countdown message past Redis's visibility timeout would be handed out twice."""
    import pytest
    from pydantic import ValidationError

    from fleet.settings import Settings

    assert Settings(retry_cap_s=300).retry_policy().cap_s == 300
    assert Settings().retry_policy(delivery=True).max_age_s == 21600
    with pytest.raises(ValidationError, match="APA_RETRY_CAP_S"):
        Settings(retry_cap_s=3600, redis_visibility_timeout_s=3600)
