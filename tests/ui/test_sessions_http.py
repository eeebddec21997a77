"""Sign-in, cookies, CSRF, revocation, audio ranges and course paging, over HTTP (no browser).

Runs on SQLite and on a real Postgres (the `database_url` fixture) with moto's S3 server; the
pages are the real gateway app. The browser-level checks are in test_pages_browser.py.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

from api_gateway.app import create_app
from db.accounts import revoke_api_key
from db.engine import make_engine, make_session_factory, session_scope
from db.models import ApiKey, SentenceScore, Submission, SubmissionStatus, Tenant, UiSession, utcnow
from db.summary import add_scored as add_to_course_summary
from fleet.settings import Settings
from fleet.storage import ObjectStore
from tests.ui.seed import seed, wav_bytes
from tests.ui.server import new_bucket

REDIS_URL = "redis://127.0.0.1:6379/7"


@pytest.fixture
def env(migrated_url: str, s3_server: str, tmp_path: Path):
    settings = Settings(var_dir=tmp_path / "var", database_url=migrated_url, broker_url=REDIS_URL, storage_backend="s3",
                        s3_endpoint_url=s3_server, s3_access_key_id="test", s3_secret_access_key="test",
                        s3_max_attempts=1)
    engine = make_engine(migrated_url)
    sessions = make_session_factory(engine)
    store = ObjectStore.from_settings(settings)
    seeded = seed(sessions, store, new_bucket(s3_server))
    app = create_app(settings, sessions=sessions, store=store)
    yield app, sessions, seeded
    engine.dispose()


def login_token(client: TestClient, next_path: str = "/ui/") -> str:
    page = client.get("/ui/login", params={"next": next_path})
    assert page.status_code == 200
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def sign_in(client: TestClient, key: str, next_path: str = "/ui/", **headers: str):
    token = login_token(client, next_path)
    return client.post("/ui/login", data={"api_key": key, "csrf_token": token, "next": next_path},
                       headers={"Origin": str(client.base_url), **headers}, follow_redirects=False)


def sessions_count(sessions) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(UiSession))


def test_sign_in_cookie_flags_and_csrf(env) -> None:
    app, sessions, seeded = env
    key = seeded.keys["teacher_c1"]
    with TestClient(app) as client:
        assert client.get("/ui/courses/c1", follow_redirects=False).headers["location"] == "/ui/login?next=%2Fui%2Fcourses%2Fc1"
        # no CSRF token, a wrong one, or a foreign Origin: refused, no session made
        login_token(client)
        assert client.post("/ui/login", data={"api_key": key}, follow_redirects=False).status_code == 403
        assert client.post("/ui/login", data={"api_key": key, "csrf_token": "x"}, follow_redirects=False).status_code == 403
        token = login_token(client)
        foreign = client.post("/ui/login", data={"api_key": key, "csrf_token": token},
                              headers={"Origin": "https://evil.example"}, follow_redirects=False)
        assert foreign.status_code == 403 and sessions_count(sessions) == 0

        ok = sign_in(client, key, "/ui/courses/c1")
        assert ok.status_code == 303 and ok.headers["location"] == "/ui/courses/c1"
        cookie = [c for c in ok.headers.get_list("set-cookie") if c.startswith("apa_ui_session=")][0]
        flags = {p.strip().split("=")[0].lower(): p.strip() for p in cookie.split(";")}
        assert "httponly" in flags and flags["samesite"].lower() == "samesite=lax" and "secure" not in flags
        assert flags["max-age"] == "Max-Age=28800" and flags["path"] == "Path=/ui"
        page = client.get("/ui/courses/c1")
        assert page.status_code == 200 and key not in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"

        # sign-out needs the session's CSRF token; then the server-side session is gone
        assert client.post("/ui/logout", data={}, follow_redirects=False).status_code == 403
        assert sessions_count(sessions) == 1
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        old = client.cookies.get("apa_ui_session")
        out = client.post("/ui/logout", data={"csrf_token": csrf}, follow_redirects=False)
        assert out.status_code == 303 and sessions_count(sessions) == 0
        client.cookies.set("apa_ui_session", old, path="/ui")
        assert client.get("/ui/courses/c1", follow_redirects=False).status_code == 303  # the old cookie is dead


def test_secure_cookie_over_https_and_key_rules(env) -> None:
    app, sessions, seeded = env
    with TestClient(app, base_url="https://testserver") as client:
        ok = sign_in(client, seeded.keys["ops"], "https://evil.example/")  # an outside `next` is not followed
        assert ok.status_code == 303 and ok.headers["location"] == "/ui/"
        cookie = [c for c in ok.headers.get_list("set-cookie") if c.startswith("apa_ui_session=")][0]
        assert "Secure" in cookie and "HttpOnly" in cookie
    app.state.services.settings.public_base_url = "https://apa.example"  # TLS ends at a proxy
    with TestClient(app) as client:  # (so over plain http here the browser would not even send it back)
        assert "Secure" in client.get("/ui/login").headers["set-cookie"]
    app.state.services.settings.public_base_url = "http://127.0.0.1:8000"
    with TestClient(app) as client:
        for key in (seeded.keys["lms"], "apa_not-a-key"):  # only teacher and ops keys sign in
            refused = sign_in(client, key)
            assert refused.status_code == 401 and "apa_ui_session" not in refused.headers.get("set-cookie", "")


def test_revoking_the_key_ends_its_sessions(env) -> None:
    app, sessions, seeded = env
    with TestClient(app) as client:
        assert sign_in(client, seeded.keys["teacher_c1"]).status_code == 303
        assert client.get("/ui/courses/c1").status_code == 200
        with session_scope(sessions) as s:
            key = s.scalar(select(ApiKey).where(ApiKey.name == "Ms Rivera (c1)"))
            revoke_api_key(s, str(key.id))
        assert client.get("/ui/courses/c1", follow_redirects=False).status_code == 303
        with session_scope(sessions) as s:  # an expired session is as good as none
            s.execute(UiSession.__table__.update().values(expires_at=utcnow() - timedelta(seconds=1)))
        assert client.get("/ui/", follow_redirects=False).status_code == 303
    with TestClient(app) as client:  # a deactivated tenant's keys read nothing, here as in the API
        assert sign_in(client, seeded.keys["teacher_c2"]).status_code == 303
        assert client.get("/ui/courses/c2").status_code == 200
        with session_scope(sessions) as s:
            s.get(Tenant, seeded.acme).active = False
        assert client.get("/ui/courses/c2", follow_redirects=False).status_code == 303


def test_audio_is_streamed_with_ranges(env) -> None:
    app, sessions, seeded = env
    with TestClient(app) as client:
        sign_in(client, seeded.keys["teacher_c1"])
        url = f"/ui/submissions/{seeded.detailed}/audio"
        whole = client.get(url)
        assert whole.status_code == 200 and whole.headers["content-type"] == "audio/wav"
        assert whole.content == wav_bytes() and whole.headers["accept-ranges"] == "bytes"
        part = client.get(url, headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and part.content == wav_bytes()[:100]
        assert part.headers["content-range"] == f"bytes 0-99/{len(wav_bytes())}"
        assert client.get(url, headers={"Range": f"bytes={10**9}-"}).status_code == 416
    with TestClient(app) as anonymous:
        assert anonymous.get(url, follow_redirects=False).status_code == 401


def test_course_of_2000_learners_is_paged_and_sorted(env) -> None:
    app, sessions, seeded = env
    now = utcnow()
    subs, sents = [], []
    for i in range(2000):
        sid = uuid.uuid4()
        subs.append({"id": sid, "tenant_id": seeded.acme, "lms_submission_id": f"big-{i}", "learner_id": f"B{i:04d}",
                     "course_id": "big", "reference_text": "hi", "audio_uri": "s3://b/x.wav", "granularity": "full",
                     "status": SubmissionStatus.scored, "created_at": now, "updated_at": now, "attempts": 0})
        sents.append({"submission_id": sid, "total": i % 11, "accuracy": 5})
    with session_scope(sessions) as s:
        s.execute(insert(Submission), subs)
        s.execute(insert(SentenceScore), sents)
        for sub in subs:  # what the worker's result transaction does
            add_to_course_summary(s, sub["id"])
    with TestClient(app) as client:
        sign_in(client, seeded.keys["ops"])
        last = client.get("/ui/courses/big", params={"page_no": 40, "tenant_id": str(seeded.acme)})
        assert last.status_code == 200 and "page 40 of 40" in last.text
        learners = re.findall(r'<tr data-learner="([^"]+)">', last.text)
        assert learners == [f"B{i:04d}" for i in range(1950, 2000)]
        top = client.get("/ui/courses/big", params={"sort": "latest_total", "dir": "desc"})
        first = re.findall(r'<tr data-learner="([^"]+)">', top.text)[:3]
        assert first == ["B0010", "B0021", "B0032"]  # total 10, ties by learner id


def cell(html: str, learner: str, col: str) -> str:
    row = html.split(f'<tr data-learner="{learner}">', 1)[1].split("</tr>", 1)[0]
    return re.search(rf'data-col="{col}">([^<]*)<', row).group(1)


def test_course_page_cache_follows_new_and_rescored_recordings(env) -> None:
    app, sessions, seeded = env
    cache = app.state.ui_course_cache
    with TestClient(app) as client:
        sign_in(client, seeded.keys["teacher_c1"])
        first = client.get("/ui/courses/c1").text
        assert cell(first, "L5", "recordings") == "1" and cell(first, "L1", "latest_total") == "7"
        assert client.get("/ui/courses/c1", params={"sort": "recordings"}).status_code == 200
        assert (cache.misses, cache.hits) == (1, 1)  # the second view reused the course's rows

        with session_scope(sessions) as s:  # a new recording of L5 arrives, scored
            sub = Submission(tenant_id=seeded.acme, lms_submission_id="late", learner_id="L5", course_id="c1",
                             reference_text="x", audio_uri="s3://b/x.wav", granularity="full",
                             status=SubmissionStatus.scored)
            sub.sentence = SentenceScore(total=2, accuracy=2, fluency=2, prosody=2)
            s.add(sub)
            s.flush()
            add_to_course_summary(s, sub.id)
        page = client.get("/ui/courses/c1").text
        assert cell(page, "L5", "recordings") == "2" and cell(page, "L5", "latest_total") == "2"

        with session_scope(sessions) as s:  # L1's queued recording gets scored (as the worker does)
            queued = s.scalar(select(Submission).where(Submission.learner_id == "L1",
                                                       Submission.status == SubmissionStatus.queued))
            queued.status = SubmissionStatus.scored
            queued.sentence = SentenceScore(total=1, accuracy=1, fluency=1, prosody=1)
            s.flush()
            add_to_course_summary(s, queued.id)
        page = client.get("/ui/courses/c1").text
        assert cell(page, "L1", "latest_total") == "1"
        assert cache.misses == 3


def test_ids_with_spaces_and_symbols_are_linked_escaped(env) -> None:
    app, sessions, seeded = env
    with session_scope(sessions) as s:
        sub = Submission(tenant_id=seeded.acme, lms_submission_id="odd", learner_id="Ann Lee&co", course_id="bio 101/b",
                         reference_text="x", audio_uri="s3://b/x.wav", granularity="full", status=SubmissionStatus.scored)
        sub.sentence = SentenceScore(total=4)
        s.add(sub)
        s.flush()
        add_to_course_summary(s, sub.id)
    with TestClient(app) as client:
        sign_in(client, seeded.keys["ops"])
        page = client.get("/ui/courses/bio%20101%2Fb")
        assert page.status_code == 200
        link = re.search(r'<a href="(/ui/learners/[^"]+)">Ann Lee&amp;co</a>', page.text).group(1).replace("&amp;", "&")
        assert link.startswith("/ui/learners/Ann%20Lee%26co?course_id=bio+101%2Fb")
        learner = client.get(link)
        assert learner.status_code == 200 and "Ann Lee&amp;co" in learner.text


def test_learner_page_lists_each_recordings_total_and_reference_text(env) -> None:
    """The history rows are flat (item columns + sentence scores); the page still shows what each
    recording was of and its total, and a dash for one not scored yet."""
    app, sessions, seeded = env
    with session_scope(sessions) as s:
        scored = Submission(tenant_id=seeded.acme, lms_submission_id="r1", learner_id="Rita", course_id="c1",
                            reference_text="She sells sea shells", audio_uri="s3://b/x.wav", granularity="full",
                            status=SubmissionStatus.scored, created_at=utcnow() - timedelta(hours=2))
        scored.sentence = SentenceScore(total=4)
        queued = Submission(tenant_id=seeded.acme, lms_submission_id="r2", learner_id="Rita", course_id="c1",
                            reference_text="Red lorry, yellow lorry", audio_uri="s3://b/y.wav", granularity="full",
                            status=SubmissionStatus.queued, created_at=utcnow() - timedelta(hours=1))
        s.add_all([scored, queued])
        s.flush()
        ids = {"scored": str(scored.id), "queued": str(queued.id)}
    with TestClient(app) as client:
        sign_in(client, seeded.keys["teacher_c1"])
        page = client.get("/ui/learners/Rita", params={"course_id": "c1"})
        assert page.status_code == 200
        table = page.text.split('id="recordings"', 1)[1]
        rows = re.findall(r'<tr data-id="([^"]+)">(.*?)</tr>', table, re.DOTALL)
        assert [r[0] for r in rows] == [ids["queued"], ids["scored"]]  # newest first
        cells = {rid: re.findall(r"<td[^>]*>(.*?)</td>", body, re.DOTALL) for rid, body in rows}
        assert cells[ids["scored"]][-2:] == ["4", "She sells sea shells"]
        assert cells[ids["queued"]][-2:] == ["–", "Red lorry, yellow lorry"]
