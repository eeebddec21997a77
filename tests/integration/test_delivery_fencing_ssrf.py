"""Callback delivery: the fenced lease, the overall deadline and the SSRF guard, on SQLite and
Postgres, against real local HTTP servers (issue 8, defects 9 and 14)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlalchemy import text, update

from db.accounts import create_tenant
from db.engine import session_scope
from db.models import Delivery, DeliveryStatus, Submission, SubmissionStatus, utcnow
from fleet.callback_policy import address_refusal
from workers import delivery as delivery_mod
from workers.delivery import LEASE_S, REQUEST_DEADLINE_S, deliver
from workers.egress import callback_client, refused_address


class Receiver:
    """A real HTTP server that counts TCP connections and answers each POST by a mode:
    `ok` (200), `hold` (wait for `release`, then 500) or `drip` (200 with a body sent a byte at a time)."""

    def __init__(self, modes: list[str]) -> None:
        self.modes, self.got, self.connections = list(modes), [], 0
        self.arrived, self.release = threading.Event(), threading.Event()
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers["content-length"]))
                outer.got.append(self.headers.get("webhook-id"))
                mode = outer.modes.pop(0) if outer.modes else "ok"
                outer.arrived.set()
                if mode == "hold":
                    outer.release.wait(30)
                    self.send_response(500)
                    self.send_header("content-length", "0")
                    self.end_headers()
                elif mode == "drip":
                    self.send_response(200)
                    self.send_header("content-length", "60")
                    self.end_headers()
                    for _ in range(60):  # each read finishes well inside httpx's 10 s read timeout
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.2)
                else:
                    self.send_response(200)
                    self.send_header("content-length", "0")
                    self.end_headers()

            def log_message(self, *a):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def process_request(self, request, client_address):
                outer.connections += 1
                super().process_request(request, client_address)

        self.server = Server(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/cb"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(modes: list[str]) -> Receiver:
        made.append(Receiver(modes))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _outbox(session_factory, registered: str, url: str | None = None) -> uuid.UUID:
    with session_scope(session_factory) as s:
        tenant = create_tenant(s, f"t-{uuid.uuid4().hex[:6]}", callback_url=registered)
        sub = Submission(tenant_id=tenant.id, lms_submission_id="x", learner_id="l", course_id="c",
                         reference_text="HI", audio_uri="a.wav", granularity="full", status=SubmissionStatus.scored)
        s.add(sub)
        s.flush()
        d = Delivery(submission_id=sub.id, tenant_id=tenant.id, url=url or registered,
                     event_type="submission.completed", payload={"type": "submission.completed", "data": {}})
        s.add(d)
        s.flush()
        return d.id


def _row(session_factory, did: uuid.UUID) -> Delivery:
    with session_factory() as s:
        return s.get(Delivery, did)


def test_the_request_deadline_is_inside_the_lease() -> None:
    assert 0 < REQUEST_DEADLINE_S < LEASE_S / 1.5


def test_a_stale_lease_cannot_overwrite_the_next_holders_result(session_factory, receivers) -> None:
    """Worker A's request outlasts its lease; B takes the row and delivers it; A's late answer (500)
    must not turn the delivered row back into a retry. Both attempts are counted (atomic
    `attempts + 1`), and A holds no open transaction while its request is in flight."""
    receiver = receivers(["hold", "ok"])
    did = _outbox(session_factory, receiver.url)
    outcome: dict[str, object] = {}

    def worker_a() -> None:
        with session_factory() as s, callback_client(allow_loopback=True) as http:
            outcome["a"] = deliver(s, did, http, allow_loopback_http=True)

    a = threading.Thread(target=worker_a)
    a.start()
    assert receiver.arrived.wait(10), "worker A never posted"
    with session_factory() as s:
        if s.bind.dialect.name == "postgresql":  # A's request is in flight: no transaction left open
            idle = s.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"))
            assert idle == 0
    with session_scope(session_factory) as s:  # A's lease runs out
        s.execute(update(Delivery).where(Delivery.id == did).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    with session_factory() as s, callback_client(allow_loopback=True) as http:
        assert deliver(s, did, http, allow_loopback_http=True) is None  # B: delivered
    receiver.release.set()
    a.join(30)
    assert outcome["a"] is None  # A lost the lease: no retry scheduled by it
    row = _row(session_factory, did)
    assert (row.status, row.last_status_code, row.last_error) == (DeliveryStatus.delivered, 200, None)
    assert row.attempts == 2
    assert receiver.got == [str(did), str(did)]  # the same webhook-id both times (the LMS de-duplicates)


def test_a_trickling_answer_ends_at_the_overall_deadline(session_factory, receivers, monkeypatch) -> None:
    """Each byte arrives well inside the per-read timeout, so only an overall deadline ends it."""
    monkeypatch.setattr(delivery_mod, "REQUEST_DEADLINE_S", 1.0)
    receiver = receivers(["drip"])
    did = _outbox(session_factory, receiver.url)
    started = time.monotonic()
    with session_factory() as s, callback_client(allow_loopback=True) as http:
        retry_in = deliver(s, did, http, allow_loopback_http=True)
    elapsed = time.monotonic() - started
    assert elapsed < 3, elapsed  # the drip alone takes 12 s
    row = _row(session_factory, did)
    assert retry_in is not None and row.status == DeliveryStatus.pending and row.attempts == 1
    assert "Timeout" in row.last_error


def test_connect_time_guard_refuses_loopback_by_address_and_by_name(receivers) -> None:
    receiver = receivers(["ok", "ok"])
    with callback_client(allow_loopback=False) as http:
        for url in (receiver.url, f"http://localhost:{receiver.port}/cb"):
            with pytest.raises(httpx.ConnectError) as info:
                http.post(url, content=b"{}")
            assert "loopback" in refused_address(info.value)
    assert receiver.connections == 0  # refused before connecting
    with callback_client(allow_loopback=True) as http:  # the embedded mode's and tests' setting
        assert http.post(receiver.url, content=b"{}").status_code == 200
    assert receiver.connections == 1


def test_a_name_that_resolves_inside_is_never_posted_to(session_factory, receivers) -> None:
    """The URL passes the origin rule (https, the tenant's registered origin, a host name), but the
    name resolves to an internal address: the delivery fails at connect time and nothing is sent."""
    host = socket.gethostname()
    resolved = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    assert resolved and all(address_refusal(a, allow_loopback=False) for a in resolved), resolved
    receiver = receivers(["ok"])
    registered = f"https://{host}:{receiver.port}/cb"
    did = _outbox(session_factory, registered)
    with session_factory() as s, callback_client(allow_loopback=False) as http:
        assert deliver(s, did, http) is None
    row = _row(session_factory, did)
    assert row.status == DeliveryStatus.failed and "refused to connect" in row.last_error
    assert receiver.connections == 0


@pytest.mark.parametrize("url", ["https://evil.example/cb", "http://127.0.0.1:9/cb", "https://10.1.2.3/cb"])
def test_a_stored_url_off_the_registered_origin_is_not_posted(session_factory, receivers, url: str) -> None:
    """Rows written before the rule (or after the tenant moved its origin) are checked at send time."""
    receiver = receivers(["ok"])
    did = _outbox(session_factory, receiver.url.replace("http://", "https://"), url=url)
    with session_factory() as s, callback_client(allow_loopback=False) as http:
        assert deliver(s, did, http) is None
    row = _row(session_factory, did)
    assert row.status == DeliveryStatus.failed and row.last_error.startswith("bad callback URL")
    assert receiver.connections == 0
