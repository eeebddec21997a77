"""Callback delivery from the outbox and the sweeper, on SQLite and Postgres, over real HTTP."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import update
from standardwebhooks import Webhook

from db.accounts import create_tenant
from db.engine import session_scope
from db.models import Delivery, DeliveryStatus, Submission, SubmissionStatus, utcnow
from fleet.retry import RETRY_WINDOW_EXHAUSTED, RetryPolicy
from workers.delivery import deliver, due_deliveries, outcome_line
from workers.egress import callback_client
from workers.sweeper import sweep


class Receiver:
    """Answers with the next status code of a script, records what it got."""

    def __init__(self, script: list[int]) -> None:
        self.script, self.got = list(script), []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.got.append((body, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(outer.script.pop(0) if outer.script else 200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cb"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def outbox(session_factory):
    def make(script: list[int]):
        receiver = Receiver(script)
        with session_scope(session_factory) as s:
            tenant = create_tenant(s, f"t-{uuid.uuid4().hex[:6]}", callback_url=receiver.url)
            sub = Submission(tenant_id=tenant.id, lms_submission_id="x", learner_id="l", course_id="c",
                             reference_text="HI", audio_uri="a.wav", granularity="full", status=SubmissionStatus.scored)
            s.add(sub)
            s.flush()
            d = Delivery(submission_id=sub.id, tenant_id=tenant.id, url=receiver.url, event_type="submission.completed",
                         payload={"type": "submission.completed", "data": {"id": str(sub.id)}})
            s.add(d)
            s.flush()
            return receiver, d.id, tenant.webhook_secret
    return make


def _make_due(session_factory, delivery_id) -> None:
    with session_scope(session_factory) as s:
        s.execute(update(Delivery).where(Delivery.id == delivery_id).values(next_attempt_at=utcnow() - timedelta(seconds=1)))


def test_signed_delivery_retries_5xx_then_succeeds(session_factory, outbox) -> None:
    receiver, did, secret = outbox([503, 429])
    with callback_client(allow_loopback=True) as http:
        for expected_status in (DeliveryStatus.pending, DeliveryStatus.pending, DeliveryStatus.delivered):
            with session_factory() as s:
                retry_in = deliver(s, did, http, allow_loopback_http=True)
                assert s.get(Delivery, did).status == expected_status
            assert (retry_in is None) == (expected_status is DeliveryStatus.delivered)
            with session_factory() as s:  # not due before its backoff: nothing is sent
                assert deliver(s, did, http, allow_loopback_http=True) is None
            _make_due(session_factory, did)
    assert len(receiver.got) == 3
    ids = {h["webhook-id"] for _, h in receiver.got}
    assert ids == {str(did)}  # stable across retries so the LMS can de-duplicate
    body, headers = receiver.got[-1]
    assert Webhook(secret).verify(body, headers)["data"]["id"]


def test_client_error_stops_delivery(session_factory, outbox) -> None:
    receiver, did, _ = outbox([410])
    with session_factory() as s, callback_client(allow_loopback=True) as http:
        assert deliver(s, did, http, allow_loopback_http=True) is None
        row = s.get(Delivery, did)
        assert (row.status, row.last_status_code, row.attempts) == (DeliveryStatus.failed, 410, 1)
        assert due_deliveries(s) == []


def test_delivery_backs_off_by_the_shared_policy_and_gives_up_by_age(session_factory, outbox) -> None:
    """The retry count lives on the row and the wait grows with it; once the delivery has been
    failing for longer than the policy's window it is dead-lettered with the policy's code."""
    policy = RetryPolicy(base_s=2.0, cap_s=300.0, max_age_s=3600.0)
    receiver, did, _ = outbox([500] * 7)
    waits = []
    with callback_client(allow_loopback=True) as http:
        for _ in range(6):
            _make_due(session_factory, did)
            with session_factory() as s:
                waits.append(deliver(s, did, http, allow_loopback_http=True, policy=policy))
    # equal jitter: the n-th wait lies in [2**n / 2, 2**n] seconds, so it really grows
    assert all(2.0 ** n / 2 <= w <= 2.0 ** n for n, w in enumerate(waits, start=1)), waits
    with session_factory() as s:
        row = s.get(Delivery, did)
        assert (row.status, row.attempts) == (DeliveryStatus.pending, 6)
    with session_scope(session_factory) as s:  # it has now been failing for longer than the window
        s.execute(update(Delivery).where(Delivery.id == did).values(
            created_at=utcnow() - timedelta(seconds=3601), next_attempt_at=utcnow() - timedelta(seconds=1)))
    with session_factory() as s, callback_client(allow_loopback=True) as http:
        assert deliver(s, did, http, allow_loopback_http=True, policy=policy) is None
        row = s.get(Delivery, did)
        assert row.status == DeliveryStatus.failed and row.last_error.startswith(RETRY_WINDOW_EXHAUSTED)
        assert "HTTP 500" in row.last_error and due_deliveries(s) == []
    assert len(receiver.got) == 7


def test_sweeper_republishes_requeues_and_dead_letters(session_factory) -> None:
    old = utcnow() - timedelta(seconds=100)
    with session_scope(session_factory) as s:
        tenant = create_tenant(s, "t")

        def sub(name, status, attempts, updated_at):
            row = Submission(tenant_id=tenant.id, lms_submission_id=name, learner_id="l", course_id="c",
                             reference_text="HI", audio_uri="a.wav", granularity="full", status=status,
                             attempts=attempts, updated_at=updated_at)
            s.add(row)
            s.flush()
            return row.id

        lost_msg = sub("lost", SubmissionStatus.queued, 0, old)
        dead_worker = sub("dead", SubmissionStatus.running, 1, old)
        exhausted = sub("exhausted", SubmissionStatus.running, 5, old)
        fresh = sub("fresh", SubmissionStatus.running, 1, utcnow())
        done = sub("done", SubmissionStatus.scored, 1, old)
    with session_factory() as s:  # the broker still holds messages: a backlog, not a loss
        backlog = sweep(s, republish_after_s=50, stuck_after_s=50, max_attempts=5, republish_queued=False)
    assert backlog.republished == [dead_worker] and backlog.dead_lettered == [exhausted]
    with session_scope(session_factory) as s:  # put both back as they were
        s.execute(update(Submission).where(Submission.id.in_([dead_worker, exhausted]))
                  .values(status=SubmissionStatus.running, updated_at=old, error_code=None))
    with session_factory() as s:
        report = sweep(s, republish_after_s=50, stuck_after_s=50, max_attempts=5)
    assert set(report.republished) == {lost_msg, dead_worker}
    assert report.dead_lettered == [exhausted]
    with session_factory() as s:
        status = {i: (s.get(Submission, i).status, s.get(Submission, i).error_code)
                  for i in (lost_msg, dead_worker, exhausted, fresh, done)}
    assert status[dead_worker] == (SubmissionStatus.queued, None)
    assert status[exhausted] == (SubmissionStatus.failed, "attempts_exhausted")
    assert status[fresh][0] == SubmissionStatus.running and status[done][0] == SubmissionStatus.scored
    with session_factory() as s:  # a second sweep right away finds nothing new
        again = sweep(s, republish_after_s=50, stuck_after_s=50, max_attempts=5)
    assert again.republished == [] and again.dead_lettered == []


def test_bad_callback_url_fails_instead_of_looping(session_factory, outbox) -> None:
    receiver, did, _ = outbox([])
    with session_scope(session_factory) as s:
        s.get(Delivery, did).url = "https://lms.example/cb\x01"
    with session_factory() as s, callback_client(allow_loopback=True) as http:
        assert deliver(s, did, http, allow_loopback_http=True) is None
        row = s.get(Delivery, did)
        assert row.status == DeliveryStatus.failed and "bad callback URL" in row.last_error
        assert due_deliveries(s) == []
    assert receiver.got == []


def test_every_try_logs_whether_the_callback_failed(session_factory, outbox, caplog) -> None:
    """Celery's own line says the task ran; the delivery's line says the callback FAILED."""
    receiver, did, _ = outbox([503, 410])
    caplog.set_level("INFO", logger="workers.delivery")
    with callback_client(allow_loopback=True) as http:
        with session_factory() as s:
            retry_in = deliver(s, did, http, allow_loopback_http=True)
            assert outcome_line(s, did, retry_in).startswith("callback FAILED (attempt 1): HTTP 503")
        _make_due(session_factory, did)
        with session_factory() as s:
            retry_in = deliver(s, did, http, allow_loopback_http=True)
            assert outcome_line(s, did, retry_in).startswith("callback FAILED for good after 2 attempts: HTTP 410")
    lines = [r.getMessage() for r in caplog.records if r.name == "workers.delivery"]
    assert any(f"callback {did}" in m and "FAILED (attempt 1): HTTP 503" in m and "next try in" in m for m in lines)
    assert any("FAILED for good after 2 attempts: HTTP 410" in m for m in lines), lines
