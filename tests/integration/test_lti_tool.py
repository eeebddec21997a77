"""The LTI 1.3 tool against an independent platform (`lti1p3platform`, its own port): registration,
JWKS, deep linking, launches, the negative launch cases (each refused with nothing written), the
learner's upload route, and the AGS passback against the platform's score service.

Real parts: Postgres, the gateway served by uvicorn on a port, the platform on another port,
Redis (db from APA_TEST_REDIS_URL) as the broker the upload publishes to.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from db.accounts import create_api_key, create_tenant
from db.engine import make_engine, make_session_factory, session_scope
from db.models import (
    LtiGrade,
    LtiGradeStatus,
    LtiLaunch,
    LtiLoginState,
    Role,
    SentenceScore,
    Submission,
    SubmissionStatus,
    Tenant,
    utcnow,
)
from migrations.runner import upgrade
from fleet.settings import Settings
from tests.conftest import REDIS_URL, SAMPLE_DIR, free_port
CLIP = SAMPLE_DIR / "audio" / "000030012.flac"


def _sample_clip() -> bytes:
    """A real recording; the shared sample is absent outside the development machines (skip, as
    shared/data/README.md asks)."""
    if not CLIP.exists():
        pytest.skip(f"the speechocean762 sample is not at {SAMPLE_DIR}")
    return CLIP.read_bytes()


from tests.lti_support import (
    INSTRUCTOR,
    LtiPlatform,
    ServerThread,
    autopost_form,
    launch,
    platform_launch_form,
)

MAX_AUDIO = 400_000


@dataclass
class Env:
    base: str
    sessions: object
    ops_key: str
    platform: LtiPlatform  # registered for tenant acme
    other: LtiPlatform  # registered for tenant beta
    settings: Settings

    def count(self, model) -> int:
        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(model))

    def register(self, platform: LtiPlatform, tenant: str) -> httpx.Response:
        return httpx.post(f"{self.base}/v1/lti/registrations", json={"tenant": tenant, **platform.tool_registration},
                          headers={"X-API-Key": self.ops_key})


@contextmanager
def running_stack(url: str, folder: Path) -> Iterator[Env]:
    """Migrated database with tenants acme and beta and an ops key, the gateway and two platforms."""
    from api_gateway.app import create_app

    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with session_scope(sessions) as s:
        create_tenant(s, "acme")
        create_tenant(s, "beta")
        _, ops_key = create_api_key(s, Role.ops)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(var_dir=folder / "var", database_url=url, broker_url=REDIS_URL,
                        public_base_url=base, max_audio_bytes=MAX_AUDIO, lti_jwks_cache_s=300)
    gateway = ServerThread(create_app(settings, sessions=sessions), port).start()
    platform = LtiPlatform(base).start()
    other = LtiPlatform(base).start()
    try:
        yield Env(base, sessions, ops_key, platform, other, settings)
    finally:
        platform.stop()
        other.stop()
        gateway.stop()
        engine.dispose()


@pytest.fixture(scope="module")
def stack(pg_server: str, tmp_path_factory):
    """One database, gateway and pair of platforms for the module (each test starts from empty
    LTI tables, see `env`): starting them per test would cost seconds each."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"apa_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    try:
        with running_stack(url, tmp_path_factory.mktemp("lti")) as env:
            yield env
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


LTI_STATE = ("lti_grades", "lti_launches", "lti_login_states", "lti_registrations", "lti_tool_keys", "submissions")


@pytest.fixture
def env(stack: Env) -> Env:
    """Empty LTI tables and submissions, fresh platform data, both platforms registered again."""
    from sqlalchemy import text

    with session_scope(stack.sessions) as s:
        s.execute(text(f"TRUNCATE {', '.join(LTI_STATE)} CASCADE"))
    for p in (stack.platform, stack.other):
        p.resource_links.clear(), p.lineitems.clear(), p.scores.clear(), p.members.clear()
        p.token_requests, p.fail_scores_with = 0, None
    assert stack.register(stack.platform, "acme").status_code == 201
    assert stack.register(stack.other, "beta").status_code == 201
    return stack


@pytest.fixture
def browser():
    with httpx.Client(timeout=30) as client:
        yield client


def deep_link(env: Env, browser: httpx.Client, text: str = "MARK IS GOING TO SEE ELEPHANT") -> str:
    """A teacher adds the activity; returns the platform's new resource link id."""
    form_page = launch(browser, env.platform, "teacher-1", kind="deeplink", roles=[INSTRUCTOR])
    assert form_page.status_code == 200, form_page.text
    assert "Add a read-aloud activity" in form_page.text
    action = f"{env.base}{urlsplit(str(form_page.url)).path}"
    answer = browser.post(action, data={"title": "Elephant", "reference_text": text, "reference_phones": ""})
    assert answer.status_code == 200, answer.text
    return_url, fields = autopost_form(answer.text)
    assert return_url == f"{env.platform.issuer}/deep-link-return"
    created = browser.post(return_url, data=fields)
    assert created.status_code == 200, created.text
    return created.json()["resource_links"][0]


def test_registration_route_jwks_and_config(env: Env) -> None:
    again = env.register(env.platform, "acme")
    assert again.status_code == 200  # an update, not a second row
    stolen = env.register(env.platform, "beta")
    assert stolen.status_code == 422 and "another tenant" in stolen.json()["detail"]["message"]
    assert httpx.post(f"{env.base}/v1/lti/registrations", json={"tenant": "acme", **env.platform.tool_registration},
                      headers={"X-API-Key": "nope"}).status_code == 401
    regs = httpx.get(f"{env.base}/v1/lti/registrations", headers={"X-API-Key": env.ops_key}).json()
    assert {r["issuer"] for r in regs} == {env.platform.issuer, env.other.issuer}

    keys = httpx.get(f"{env.base}/lti/jwks").json()["keys"]
    assert len(keys) == 1 and keys[0]["alg"] == "RS256" and keys[0]["kid"] and "d" not in keys[0]
    from db.lti import rotate_tool_key, signing_key

    with env.sessions() as s:
        new_kid = rotate_tool_key(s).kid
        assert signing_key(s).kid == new_kid
    kids = [k["kid"] for k in httpx.get(f"{env.base}/lti/jwks").json()["keys"]]
    assert kids == [new_kid, keys[0]["kid"]]  # the retired key stays published

    cfg = httpx.get(f"{env.base}/v1/lti/config", headers={"X-API-Key": env.ops_key}).json()
    assert cfg["login_initiation_url"] == f"{env.base}/lti/login" and cfg["jwks_url"] == f"{env.base}/lti/jwks"


def test_deep_link_then_learner_launch(env: Env, browser: httpx.Client) -> None:
    rl = deep_link(env, browser)
    link = env.platform.resource_links[rl]
    assert link["custom"]["reference_text"] == "MARK IS GOING TO SEE ELEPHANT"
    assert env.platform.lineitems[link["lineitem"]]["scoreMaximum"] == 100
    assert link["url"] == f"{env.base}/lti/launch"

    page = launch(browser, env.platform, "learner-7", resource_link=rl)
    assert page.status_code == 200, page.text
    assert "MARK IS GOING TO SEE ELEPHANT" in page.text and "MediaRecorder" in page.text
    with env.sessions() as s:
        row = s.scalars(select(LtiLaunch).where(LtiLaunch.user_id == "learner-7")).one()
        assert row.resource_link_id == rl and row.context_id == "course-1"


def test_deep_link_refused_where_the_placement_takes_no_activity_links(env: Env, browser: httpx.Client) -> None:
    form_page = launch(browser, env.platform, "teacher-1", kind="deeplink", roles=[INSTRUCTOR], accept="link,file")
    assert form_page.status_code == 200
    answer = browser.post(f"{env.base}{urlsplit(str(form_page.url)).path}",
                          data={"title": "t", "reference_text": "MARK IS GOING", "reference_phones": ""})
    assert answer.status_code == 422 and answer.headers["x-lti-error"] == "resource_link_not_accepted"
    bad_text = launch(browser, env.platform, "teacher-1", kind="deeplink", roles=[INSTRUCTOR])
    answer = browser.post(f"{env.base}{urlsplit(str(bad_text.url)).path}",
                          data={"title": "t", "reference_text": "MARK IS GLORPING", "reference_phones": ""})
    assert answer.status_code == 422 and "GLORPING" in answer.text  # the form again, naming the unknown word
    assert env.platform.resource_links == {}


NEGATIVE = ["bad_signature", "wrong_audience", "expired", "unknown_deployment"]
EXPECTED = {"bad_signature": "bad_signature", "wrong_audience": "wrong_audience", "expired": "token_expired",
            "unknown_deployment": "unknown_deployment"}


@pytest.mark.parametrize("tamper", NEGATIVE)
def test_bad_id_tokens_are_refused_with_nothing_written(env: Env, browser: httpx.Client, tamper: str) -> None:
    response = launch(browser, env.platform, "learner-1", resource_link="rl-x", tamper=tamper)
    assert response.status_code == 401, response.text
    assert response.headers["x-lti-error"] == EXPECTED[tamper]
    assert "could not be opened" in response.text
    assert env.count(LtiLaunch) == 0 and env.count(Submission) == 0
    with env.sessions() as s:
        assert s.scalars(select(LtiLoginState.used_at)).all() == [None]  # the state was not consumed


def test_replayed_launch_is_refused(env: Env, browser: httpx.Client) -> None:
    action, fields = platform_launch_form(browser, env.platform, "learner-1", resource_link="rl-x")
    first = browser.post(action, data=fields)
    assert first.status_code == 303
    replay = browser.post(action, data=fields)
    assert replay.status_code == 401 and replay.headers["x-lti-error"] == "nonce_replayed"
    assert env.count(LtiLaunch) == 1


def test_state_bound_to_the_browser(env: Env, browser: httpx.Client) -> None:
    action, fields = platform_launch_form(browser, env.platform, "learner-1", resource_link="rl-x")
    with httpx.Client(timeout=30) as stranger:  # another browser: no cookie from the login
        other = stranger.post(action, data=fields)
    assert other.status_code == 401 and other.headers["x-lti-error"] == "state_mismatch"
    forged = browser.post(action, data={**fields, "state": "not-a-state"})
    assert forged.status_code == 401 and forged.headers["x-lti-error"] == "unknown_state"
    assert env.count(LtiLaunch) == 0


def test_unknown_deployment_at_login_and_unknown_issuer(env: Env, browser: httpx.Client) -> None:
    query = {"iss": env.platform.issuer, "login_hint": "u", "client_id": env.platform.client_id,
             "lti_deployment_id": "dep-unknown", "target_link_uri": f"{env.base}/lti/launch"}
    r = browser.get(f"{env.base}/lti/login?{urlencode(query)}")
    assert r.status_code == 400 and r.headers["x-lti-error"] == "unknown_deployment"
    r = browser.get(f"{env.base}/lti/login?{urlencode({**query, 'iss': 'https://evil.example', 'lti_deployment_id': 'dep-1'})}")
    assert r.status_code == 400 and r.headers["x-lti-error"] == "unknown_registration"
    assert env.count(LtiLoginState) == 0
    posted = browser.post(f"{env.base}/lti/login", data={**query, "lti_deployment_id": "dep-1"})  # Canvas posts it
    assert posted.status_code == 302 and posted.headers["location"].startswith(f"{env.platform.issuer}/auth?")
    sent = dict(parse_qsl(urlsplit(posted.headers["location"]).query))
    assert (sent["response_type"], sent["response_mode"], sent["prompt"], sent["scope"]) == (
        "id_token", "form_post", "none", "openid")
    assert sent["redirect_uri"] == f"{env.base}/lti/launch" and sent["client_id"] == env.platform.client_id
    assert env.count(LtiLoginState) == 1


def test_launch_for_another_tenants_registration_is_refused(env: Env, browser: httpx.Client) -> None:
    """Login through acme's platform, then an id_token from beta's platform (valid for beta's
    registration, carrying acme's nonce) is posted with acme's state."""
    redirect = browser.get(env.platform.start_url("learner-1", resource_link="rl-x"))
    login = browser.get(redirect.headers["location"])
    assert login.status_code == 302
    params = dict(parse_qsl(urlsplit(login.headers["location"]).query))
    params["client_id"] = env.other.client_id
    page = browser.get(f"{env.other.issuer}/auth?{urlencode(params)}")
    assert page.status_code == 200, page.text
    action, fields = autopost_form(page.text)
    assert fields["state"] == params["state"]
    refused = browser.post(action, data=fields)
    assert refused.status_code == 401 and refused.headers["x-lti-error"] == "registration_mismatch"
    assert env.count(LtiLaunch) == 0 and env.count(Submission) == 0


def _recording_page(env: Env, browser: httpx.Client) -> str:
    rl = deep_link(env, browser)
    page = launch(browser, env.platform, "learner-7", resource_link=rl)
    assert page.status_code == 200
    return str(page.url)


def test_upload_creates_submission_and_grade_row(env: Env, browser: httpx.Client) -> None:
    page_url = _recording_page(env, browser)
    clip = _sample_clip()
    up = browser.post(f"{page_url}/recordings", content=clip, headers={"content-type": "audio/flac"})
    assert up.status_code == 202, up.text
    with env.sessions() as s:
        sub = s.get(Submission, uuid.UUID(up.json()["id"]))
        assert (sub.learner_id, sub.course_id, sub.status) == ("learner-7", "course-1", SubmissionStatus.queued)
        assert sub.reference_text == "MARK IS GOING TO SEE ELEPHANT" and sub.assignment_id.startswith("rl-")
        grade = s.scalars(select(LtiGrade)).one()
        assert grade.status is LtiGradeStatus.waiting and grade.user_id == "learner-7"
        assert grade.lineitem_url.startswith(f"{env.platform.issuer}/lineitems/")
    result = browser.get(up.json()["result_url"]).json()
    assert result["status"] == "queued" and result["grade"]["status"] == "waiting"

    # the webhook path's limits and codes; nothing written for a refusal
    for body, ctype, status, code in [
        (b"", "audio/wav", 422, "object_empty"),
        (b"x" * (MAX_AUDIO + 1), "audio/wav", 422, "object_too_large"),
        (clip, "text/plain", 415, "unsupported_media_type"),
    ]:
        r = browser.post(f"{page_url}/recordings", content=body, headers={"content-type": ctype})
        assert (r.status_code, r.json()["detail"]["code"]) == (status, code)
    assert env.count(Submission) == 1
    assert browser.post(f"{env.base}/lti/s/not-a-token/recordings", content=clip,
                        headers={"content-type": "audio/flac"}).status_code == 404


def _scored_submission(env: Env, browser: httpx.Client, total: int | None) -> uuid.UUID:
    page_url = _recording_page(env, browser)
    clip = _sample_clip()
    sid = uuid.UUID(browser.post(f"{page_url}/recordings", content=clip,
                                 headers={"content-type": "audio/flac"}).json()["id"])
    with session_scope(env.sessions) as s:  # what a score worker writes (the e2e test runs a real one)
        sub = s.get(Submission, sid)
        if total is None:
            sub.status, sub.error_code = SubmissionStatus.failed, "audio_silent"
        else:
            sub.status, sub.finished_at = SubmissionStatus.scored, utcnow()
            s.add(SentenceScore(submission_id=sid, total=total, total_expected=float(total)))
    return sid


def test_passback_posts_score_with_cached_token(env: Env, browser: httpx.Client) -> None:
    from workers.lti_passback import TokenCache, due_grades, post_grade, promote_finished

    _scored_submission(env, browser, 7)
    cache = TokenCache()
    with env.sessions() as s, httpx.Client() as http:
        promote_finished(s)
        (gid,) = due_grades(s)
        assert post_grade(s, gid, http, max_attempts=3, cache=cache) is None
        grade = s.get(LtiGrade, gid)
        assert grade.status is LtiGradeStatus.delivered and grade.score_given == 70.0
    (score,) = env.platform.scores
    assert (score["userId"], score["scoreGiven"], score["scoreMaximum"]) == ("learner-7", 70.0, 100)
    assert (score["activityProgress"], score["gradingProgress"]) == ("Completed", "FullyGraded")
    assert score["timestamp"]

    _scored_submission(env, browser, 9)  # a second grade reuses the cached access token
    with env.sessions() as s, httpx.Client() as http:
        promote_finished(s)
        (gid,) = due_grades(s)
        post_grade(s, gid, http, max_attempts=3, cache=cache)
    assert [x["scoreGiven"] for x in env.platform.scores] == [70.0, 90.0]
    assert env.platform.token_requests == 1 and cache.fetches == 1


def test_passback_failures_retry_then_end_visible(env: Env, browser: httpx.Client) -> None:
    from workers.lti_passback import TokenCache, due_grades, post_grade, promote_finished

    _scored_submission(env, browser, 5)
    env.platform.fail_scores_with = 503
    with env.sessions() as s, httpx.Client() as http:
        promote_finished(s)
        (gid,) = due_grades(s)
        assert post_grade(s, gid, http, max_attempts=2, cache=TokenCache()) is not None  # backs off
        grade = s.get(LtiGrade, gid)
        assert grade.status is LtiGradeStatus.pending and grade.last_status_code == 503
        s.execute(LtiGrade.__table__.update().values(next_attempt_at=grade.created_at))
        s.commit()
        assert post_grade(s, gid, http, max_attempts=2, cache=TokenCache()) is None
        s.refresh(grade)
        assert grade.status is LtiGradeStatus.failed and grade.attempts == 2 and "503" in grade.last_error
    failed = httpx.get(f"{env.base}/v1/lti/grades?status=failed", headers={"X-API-Key": env.ops_key}).json()
    assert [g["id"] for g in failed] == [str(gid)]
    assert env.platform.scores == []


def test_failed_recording_posts_nothing(env: Env, browser: httpx.Client) -> None:
    from workers.lti_passback import due_grades, promote_finished

    _scored_submission(env, browser, None)
    with env.sessions() as s:
        promote_finished(s)
        assert due_grades(s) == []
        assert s.scalars(select(LtiGrade.status)).one() is LtiGradeStatus.skipped
    assert env.platform.scores == []


def test_nrps_roster_for_teachers(env: Env, browser: httpx.Client) -> None:
    env.platform.members = [
        {"user_id": "learner-7", "name": "Ann", "roles": ["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"]},
        {"user_id": "learner-8", "name": "Bo", "roles": ["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"]},
    ]
    headers = {"X-API-Key": env.ops_key}
    assert httpx.get(f"{env.base}/v1/lti/courses/course-1/roster", headers=headers).status_code == 404  # no launch yet
    _scored_submission(env, browser, 8)  # learner-7 launched (NRPS claim) and was scored
    with session_scope(env.sessions) as s:
        _, teacher = create_api_key(s, Role.teacher, tenant=s.scalars(select(Tenant).where(Tenant.name == "acme")).one(),
                                    courses=["course-1"])
        _, outsider = create_api_key(s, Role.teacher, tenant=s.scalars(select(Tenant).where(Tenant.name == "acme")).one(),
                                     courses=["course-2"])
    roster = httpx.get(f"{env.base}/v1/lti/courses/course-1/roster", headers={"X-API-Key": teacher})
    assert roster.status_code == 200, roster.text
    members = {m["user_id"]: m for m in roster.json()["members"]}
    assert set(members) == {"learner-7", "learner-8"} and members["learner-7"]["name"] == "Ann"
    assert members["learner-7"]["latest"]["total"] == 8 and members["learner-8"]["latest"] is None
    assert roster.json()["context"]["id"] == "course-1"
    assert httpx.get(f"{env.base}/v1/lti/courses/course-1/roster", headers={"X-API-Key": outsider}).status_code == 403


def test_platform_keys_cached_and_refetched_on_unknown_kid(env: Env) -> None:
    from api_gateway.lti.errors import LaunchRefused
    from api_gateway.lti.platform_keys import PlatformKeyCache
    from tests.lti_support import _pem_pair

    platform = LtiPlatform(env.base).start()  # its own platform: rotating its key disturbs no other test
    try:
        url = f"{platform.issuer}/jwks"
        cache = PlatformKeyCache(ttl_s=300, min_refetch_s=0)
        old_kid = platform.registration().get_kid()
        assert cache.key_for(url, old_kid).kid == old_kid
        assert cache.key_for(url, old_kid).kid == old_kid and cache.fetches == 1  # cached
        platform.private_pem, platform.public_pem = _pem_pair()  # the platform rotates its key
        new_kid = platform.registration().get_kid()
        assert cache.key_for(url, new_kid).kid == new_kid and cache.fetches == 2  # unknown kid: refetched
        with pytest.raises(LaunchRefused) as refused:
            cache.key_for(url, "made-up")
        assert refused.value.code == "unknown_kid" and cache.fetches == 3
        slow = PlatformKeyCache(ttl_s=300, min_refetch_s=60)  # made-up kids cannot make it hammer the platform
        slow.key_for(url, new_kid)
        for _ in range(3):
            with pytest.raises(LaunchRefused):
                slow.key_for(url, "made-up")
        assert slow.fetches == 1
    finally:
        platform.stop()


def test_embedded_sqlite_launch_upload_and_replay(sqlite_database: str, tmp_path: Path) -> None:
    """The same tool on the embedded SQLite database (naive timestamps, no SKIP LOCKED)."""
    with running_stack(sqlite_database, tmp_path) as env, httpx.Client(timeout=30) as browser:
        assert env.register(env.platform, "acme").status_code == 201
        page_url = _recording_page(env, browser)
        clip = _sample_clip()
        up = browser.post(f"{page_url}/recordings", content=clip, headers={"content-type": "audio/flac"})
        assert up.status_code == 202, up.text
        action, fields = platform_launch_form(browser, env.platform, "learner-1", resource_link="rl-x")
        assert browser.post(action, data=fields).status_code == 303
        assert browser.post(action, data=fields).headers["x-lti-error"] == "nonce_replayed"
        expired = launch(browser, env.platform, "learner-1", resource_link="rl-x", tamper="expired")
        assert expired.headers["x-lti-error"] == "token_expired"
        assert env.count(LtiLaunch) == 3 and env.count(LtiGrade) == 1


def test_passback_drops_a_refused_token_and_retries_with_a_new_one(env: Env, browser: httpx.Client) -> None:
    from workers.lti_passback import SCORE_SCOPE, TokenCache, due_grades, post_grade, promote_finished

    _scored_submission(env, browser, 6)
    cache = TokenCache()
    key = (env.platform.tool_registration["auth_token_url"], env.platform.client_id, SCORE_SCOPE)
    cache.put(key, "revoked-token", 3600)  # a token the platform no longer accepts
    with env.sessions() as s, httpx.Client() as http:
        promote_finished(s)
        (gid,) = due_grades(s)
        assert post_grade(s, gid, http, max_attempts=3, cache=cache) is not None
        grade = s.get(LtiGrade, gid)
        assert grade.status is LtiGradeStatus.pending and grade.last_status_code == 401
        assert cache.get(key) is None and env.platform.token_requests == 0
        s.execute(LtiGrade.__table__.update().values(next_attempt_at=grade.created_at))
        s.commit()
        assert post_grade(s, gid, http, max_attempts=3, cache=cache) is None
        s.refresh(grade)
        assert grade.status is LtiGradeStatus.delivered and grade.attempts == 2
    assert env.platform.token_requests == 1 and [x["scoreGiven"] for x in env.platform.scores] == [60.0]
