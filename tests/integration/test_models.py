"""Constraints the database itself enforces, on Postgres and SQLite."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from db.accounts import AccountError, create_api_key, create_tenant, find_active_key, revoke_api_key
from db.engine import session_scope
from db.models import (
    Adapter,
    AdapterStatus,
    PhoneScore,
    Role,
    SentenceScore,
    Submission,
    SubmissionStatus,
    WordScore,
)


def _submission(tenant_id, lms_id: str = "s1", **kw) -> Submission:
    return Submission(
        tenant_id=tenant_id, lms_submission_id=lms_id, learner_id="l1", course_id="c1",
        reference_text="HELLO", audio_uri="s3://b/k.flac", granularity="full", **kw,
    )


def test_duplicate_lms_submission_is_rejected(session_factory) -> None:
    with session_scope(session_factory) as s:
        t = create_tenant(s, "acme")
        s.add(_submission(t.id))
    with pytest.raises(IntegrityError):
        with session_scope(session_factory) as s:
            s.add(_submission(t.id))
    with session_scope(session_factory) as s:  # another tenant may reuse the LMS id
        other = create_tenant(s, "globex")
        s.add(_submission(other.id))


def test_one_active_adapter_per_base_model(session_factory) -> None:
    with session_scope(session_factory) as s:
        s.add(Adapter(version="v1", base_model="qwen", uri="x", status=AdapterStatus.active))
        s.add(Adapter(version="v2", base_model="qwen", uri="y", status=AdapterStatus.candidate))
        s.add(Adapter(version="v3", base_model="other", uri="z", status=AdapterStatus.active))
    with pytest.raises(IntegrityError):
        with session_scope(session_factory) as s:
            v2 = s.scalar(select(Adapter).where(Adapter.version == "v2"))
            v2.status = AdapterStatus.active


def test_scores_cascade_with_submission(session_factory) -> None:
    with session_scope(session_factory) as s:
        t = create_tenant(s, "acme")
        sub = _submission(t.id, status=SubmissionStatus.scored, id=uuid.uuid4())
        word = WordScore(position=0, text="HELLO", accuracy=8, accuracy_expected=7.9)
        word.phones = [PhoneScore(position=0, phone="HH", accuracy=9, accuracy_expected=8.5, submission_id=sub.id)]
        sub.words = [word]
        sub.sentence = SentenceScore(accuracy=8, accuracy_expected=7.7)
        s.add(sub)
    with session_scope(session_factory) as s:
        loaded = s.get(Submission, sub.id)
        assert loaded.words[0].phones[0].phone == "HH"
        s.delete(loaded)
    with session_scope(session_factory) as s:
        assert s.scalar(select(PhoneScore)) is None
        assert s.scalar(select(WordScore)) is None


def test_status_check_constraint(session_factory) -> None:
    from sqlalchemy import text

    with session_scope(session_factory) as s:
        t = create_tenant(s, "acme")
        s.add(_submission(t.id))
    with pytest.raises(IntegrityError):
        with session_scope(session_factory) as s:
            s.execute(text("UPDATE submissions SET status = 'bogus'"))


def test_api_keys_hashed_scoped_and_revocable(session_factory) -> None:
    with session_scope(session_factory) as s:
        t = create_tenant(s, "acme")
        key, plain = create_api_key(s, Role.teacher, tenant=t, courses=["c1", "c2"])
        assert plain not in (key.key_hash, key.prefix) and plain.startswith(key.prefix)
        assert find_active_key(s, plain).courses == ["c1", "c2"]
        assert find_active_key(s, plain + "x") is None
        revoke_api_key(s, key.prefix)
        assert find_active_key(s, plain) is None
        with pytest.raises(AccountError, match="already revoked"):
            revoke_api_key(s, str(key.id))
        with pytest.raises(AccountError, match="no API key"):
            revoke_api_key(s, "apa_nothing")
        with pytest.raises(AccountError, match="course scope"):
            create_api_key(s, Role.teacher, tenant=t)
        with pytest.raises(AccountError, match="belongs to a tenant"):
            create_api_key(s, Role.lms)
        with pytest.raises(AccountError, match="already exists"):
            create_tenant(s, "acme")


def test_keys_of_a_deactivated_tenant_stop_working(session_factory) -> None:
    with session_scope(session_factory) as s:
        t = create_tenant(s, "acme")
        _, plain = create_api_key(s, Role.lms, tenant=t)
        assert find_active_key(s, plain) is not None
        t.active = False
        s.flush()
        assert find_active_key(s, plain) is None
