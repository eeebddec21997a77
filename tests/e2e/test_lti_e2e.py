"""LTI 1.3 end to end: an independent platform (`lti1p3platform` on its own port) and the real fleet
(uvicorn gateway, score worker with the tiny model, delivery worker with beat, Postgres, Redis,
moto S3). Register, deep-link an activity, launch as a learner, upload a real speechocean762 clip
through the page's upload route, wait for scoring, and read the score that arrived at the
platform's AGS endpoint. A recording that cannot be decoded fails with the webhook path's code and
posts no grade."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from db.accounts import create_api_key
from db.engine import session_scope
from db.models import LtiGrade, LtiGradeStatus, Role, SentenceScore, Submission
from tests import conftest
from tests.e2e import conftest as e2e_conftest
from tests.lti_support import INSTRUCTOR, LtiPlatform, autopost_form, launch, wait_until


@pytest.fixture
def fleet(fleet_factory, monkeypatch):
    """The e2e fleet on this run's own Redis db (APA_TEST_REDIS_URL), not a shared counter db."""
    def own_db(_kind: str) -> str:
        redis.Redis.from_url(conftest.REDIS_URL).flushdb()
        return conftest.REDIS_URL

    monkeypatch.setattr(e2e_conftest, "_broker_url", own_db)
    return fleet_factory("redis")


def test_lti_learner_recording_is_scored_and_graded_at_the_platform(fleet, sample_items) -> None:
    with session_scope(fleet.sessions) as s:
        _, ops_key = create_api_key(s, Role.ops)
    platform = LtiPlatform(fleet.base_url).start()
    try:
        reg = httpx.post(f"{fleet.base_url}/v1/lti/registrations", headers={"X-API-Key": ops_key},
                         json={"tenant": "acme", **platform.tool_registration}, timeout=30)
        assert reg.status_code == 201, reg.text
        item = sample_items[0]
        with httpx.Client(timeout=60) as browser:
            # the teacher adds the activity (deep linking, validated by the platform against /lti/jwks)
            form = launch(browser, platform, "teacher-1", kind="deeplink", roles=[INSTRUCTOR])
            assert form.status_code == 200, form.text
            answer = browser.post(f"{fleet.base_url}{urlsplit(str(form.url)).path}", data={
                "title": "Read aloud", "reference_text": item["text"],
                "reference_phones": json.dumps([w["phones"] for w in item["words"]])})
            return_url, fields = autopost_form(answer.text)
            rl = browser.post(return_url, data=fields).json()["resource_links"][0]

            # the learner launches it and records
            page = launch(browser, platform, "learner-42", resource_link=rl)
            assert page.status_code == 200 and item["text"] in page.text, page.text
            clip = (conftest.SAMPLE_DIR / item["audio"]).read_bytes()
            up = browser.post(f"{page.url}/recordings", content=clip, headers={"content-type": "audio/flac"})
            assert up.status_code == 202, up.text
            result_url = up.json()["result_url"]
            result = wait_until(lambda: (r := browser.get(result_url).json())["status"] in ("scored", "failed") and r,
                                180, f"scoring\n{fleet.log_tail()}", interval=1.0)
            assert result["status"] == "scored", result
            assert result["learner_id"] == "learner-42" and result["course_id"] == "course-1"
            total = result["scores"]["sentence"]["total"]["value"]
            assert len(result["scores"]["words"]) == len(item["words"])

            # the grade reaches the platform's AGS score service
            (score,) = wait_until(lambda: platform.scores, 60, f"the AGS score\n{fleet.log_tail()}")
            assert score["userId"] == "learner-42" and score["scoreGiven"] == total * 10
            assert (score["scoreMaximum"], score["gradingProgress"], score["activityProgress"]) == (
                100, "FullyGraded", "Completed")
            assert score["lineitem"] == platform.resource_links[rl]["lineitem"]
            with fleet.sessions() as s:
                grade = s.query(LtiGrade).one()
                assert grade.status is LtiGradeStatus.delivered and grade.attempts == 1
                assert s.get(SentenceScore, grade.submission_id).total == total

            # a recording the worker cannot decode fails with the webhook path's code; nothing is posted
            bad = browser.post(f"{page.url}/recordings", content=b"RIFF not really a wav" * 50,
                               headers={"content-type": "audio/wav"})
            assert bad.status_code == 202, bad.text
            failed = wait_until(lambda: (r := browser.get(bad.json()["result_url"]).json())["status"] == "failed" and r,
                                120, f"the bad recording to fail\n{fleet.log_tail()}", interval=1.0)
            assert failed["error"]["code"] == "audio_undecodable"
            wait_until(lambda: browser.get(bad.json()["result_url"]).json()["grade"]["status"] == "skipped", 30,
                       "the grade to be skipped")
            assert len(platform.scores) == 1
            assert fleet.count(Submission) == 2
    finally:
        platform.stop()
