"""Typed SQLAlchemy 2 models for the whole product.

Postgres is the record (DESIGN.md): a Celery message only names a submission, so every state a
job can be in, every attempt, and every score lives here. Enumerations are stored as short
strings with CHECK constraints so the same schema runs on Postgres and on the embedded SQLite.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Role(str, enum.Enum):
    lms = "lms"
    teacher = "teacher"
    ops = "ops"


class SubmissionStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    scored = "scored"
    failed = "failed"


class DeliveryStatus(str, enum.Enum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class BatchStatus(str, enum.Enum):
    registered = "registered"
    accepted = "accepted"
    partial = "partial"  # some items quarantined, the rest usable
    rejected = "rejected"


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class AdapterStatus(str, enum.Enum):
    candidate = "candidate"
    active = "active"
    retired = "retired"


TS = DateTime(timezone=True)


class Tenant(Base):
    """One LMS integration: its webhook signing secret, callback URL and allowed buckets."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    # Standard Webhooks secret ("whsec_..."): needed in clear to verify and sign HMACs.
    webhook_secret: Mapped[str] = mapped_column(String(120))
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    allowed_buckets: Mapped[list[str]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)

    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="tenant")


class ApiKey(Base):
    """A bearer key, stored only as its SHA-256; `prefix` identifies it in lists and logs."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    courses: Mapped[list[str]] = mapped_column(JSON, default=list)  # a teacher's course scope
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(TS)
    last_used_at: Mapped[datetime | None] = mapped_column(TS)

    tenant: Mapped[Tenant | None] = relationship(back_populates="api_keys")


class Submission(Base):
    """One recording to score; the unit of work of the `score` queue."""

    __tablename__ = "submissions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "lms_submission_id"),
        UniqueConstraint("tenant_id", "webhook_id"),
        # A learner's history, newest first (B-tree indexes scan backwards, so no DESC needed).
        Index("ix_submissions_learner_history", "tenant_id", "learner_id", "created_at"),
        # The same history for ops keys, which read across tenants: an index that does not lead with
        # tenant_id, ending in the full (created_at, id) order so a page is a backward range scan.
        Index("ix_submissions_learner_created", "learner_id", "created_at", "id"),
        # A course's learners: the course page counts each learner's recordings (every status)
        # and their last time with an index-only range scan of the course.
        Index("ix_submissions_course_learner", "tenant_id", "course_id", "learner_id", "created_at"),
        # When a course last changed (one index probe): the teachers' course page cache key.
        Index("ix_submissions_course_updated", "tenant_id", "course_id", "updated_at"),
        # The sweeper and the batch claimer: queued/running by age.
        Index("ix_submissions_status_age", "status", "updated_at"),
        # The claimer takes only rows that are due (fleet/retry.py sets next_attempt_at).
        Index("ix_submissions_status_due", "status", "next_attempt_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    lms_submission_id: Mapped[str] = mapped_column(String(200))
    webhook_id: Mapped[str | None] = mapped_column(String(200))
    learner_id: Mapped[str] = mapped_column(String(200))
    course_id: Mapped[str] = mapped_column(String(200))
    assignment_id: Mapped[str | None] = mapped_column(String(200))
    reference_text: Mapped[str] = mapped_column(Text)
    reference_phones: Mapped[list[list[str]] | None] = mapped_column(JSON)
    audio_uri: Mapped[str] = mapped_column(String(2048))
    granularity: Mapped[str] = mapped_column(String(32))
    callback_url: Mapped[str | None] = mapped_column(String(2048))

    status: Mapped[SubmissionStatus] = mapped_column(
        _enum(SubmissionStatus, "submission_status"), default=SubmissionStatus.queued
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    # The shared retry policy (fleet/retry.py): infrastructure faults (object store, database) do
    # not use attempts; they count here and push the next claim back. NULL next_attempt_at = due.
    transient_failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    failing_since: Mapped[datetime | None] = mapped_column(TS)
    next_attempt_at: Mapped[datetime | None] = mapped_column(TS)
    # A running row's lease, refreshed by its worker's heartbeat while the model runs; the sweeper
    # gives back rows whose lease expired (their worker died).
    lease_expires_at: Mapped[datetime | None] = mapped_column(TS)

    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TS, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(TS)
    finished_at: Mapped[datetime | None] = mapped_column(TS)
    model_ms: Mapped[float | None] = mapped_column(Float)

    adapter_version: Mapped[str | None] = mapped_column(String(64))
    model_name: Mapped[str | None] = mapped_column(String(300))
    engine: Mapped[str | None] = mapped_column(String(32))  # pronunciation.engines name that scored it
    model_version: Mapped[str | None] = mapped_column(String(64))  # that engine's model version
    raw_output: Mapped[str | None] = mapped_column(Text)

    sentence: Mapped[SentenceScore | None] = relationship(back_populates="submission", cascade="all, delete-orphan")
    words: Mapped[list[WordScore]] = relationship(
        back_populates="submission", cascade="all, delete-orphan", order_by="WordScore.position"
    )



class SentenceScore(Base):
    """Sentence-level scores: argmax value and expected value per aspect (None = not asked)."""

    __tablename__ = "sentence_scores"

    submission_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True
    )
    accuracy: Mapped[int | None] = mapped_column(SmallInteger)
    accuracy_expected: Mapped[float | None] = mapped_column(Float)
    fluency: Mapped[int | None] = mapped_column(SmallInteger)
    fluency_expected: Mapped[float | None] = mapped_column(Float)
    prosody: Mapped[int | None] = mapped_column(SmallInteger)
    prosody_expected: Mapped[float | None] = mapped_column(Float)
    completeness: Mapped[int | None] = mapped_column(SmallInteger)
    completeness_expected: Mapped[float | None] = mapped_column(Float)
    total: Mapped[int | None] = mapped_column(SmallInteger)
    total_expected: Mapped[float | None] = mapped_column(Float)

    submission: Mapped[Submission] = relationship(back_populates="sentence")


class WordScore(Base):
    __tablename__ = "word_scores"
    __table_args__ = (UniqueConstraint("submission_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    submission_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(String(100))
    accuracy: Mapped[int | None] = mapped_column(SmallInteger)
    accuracy_expected: Mapped[float | None] = mapped_column(Float)
    stress: Mapped[int | None] = mapped_column(SmallInteger)
    stress_expected: Mapped[float | None] = mapped_column(Float)
    total: Mapped[int | None] = mapped_column(SmallInteger)
    total_expected: Mapped[float | None] = mapped_column(Float)

    submission: Mapped[Submission] = relationship(back_populates="words")
    phones: Mapped[list[PhoneScore]] = relationship(
        back_populates="word", cascade="all, delete-orphan", order_by="PhoneScore.position"
    )


class PhoneScore(Base):
    __tablename__ = "phone_scores"
    __table_args__ = (UniqueConstraint("word_score_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    word_score_id: Mapped[int] = mapped_column(ForeignKey("word_scores.id", ondelete="CASCADE"))
    submission_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    phone: Mapped[str] = mapped_column(String(8))
    accuracy: Mapped[int] = mapped_column(SmallInteger)
    accuracy_expected: Mapped[float] = mapped_column(Float)

    word: Mapped[WordScore] = relationship(back_populates="phones")


class CourseLearnerSummary(Base):
    """Per (course, tenant, learner): what the course view shows, kept current by the worker.

    The worker's result transaction adds each scored submission (with a sentence row) here
    (`db.summary.add_scored`), so the course view reads one row per learner instead of every
    submission of the course. Sums and counts per aspect give the means (mean = sum / count over
    non-null values); `latest_*` are the sentence values of the newest scored submission by
    (created_at, id), null where that submission lacks the aspect. The primary key leads with the
    course, so both a teacher (one tenant) and ops (every tenant) read a contiguous range.
    """

    __tablename__ = "course_learner_summaries"

    course_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    learner_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    n: Mapped[int] = mapped_column(Integer)
    sum_accuracy: Mapped[int] = mapped_column(Integer)
    cnt_accuracy: Mapped[int] = mapped_column(Integer)
    sum_fluency: Mapped[int] = mapped_column(Integer)
    cnt_fluency: Mapped[int] = mapped_column(Integer)
    sum_prosody: Mapped[int] = mapped_column(Integer)
    cnt_prosody: Mapped[int] = mapped_column(Integer)
    sum_completeness: Mapped[int] = mapped_column(Integer)
    cnt_completeness: Mapped[int] = mapped_column(Integer)
    sum_total: Mapped[int] = mapped_column(Integer)
    cnt_total: Mapped[int] = mapped_column(Integer)
    latest_accuracy: Mapped[int | None] = mapped_column(SmallInteger)
    latest_fluency: Mapped[int | None] = mapped_column(SmallInteger)
    latest_prosody: Mapped[int | None] = mapped_column(SmallInteger)
    latest_completeness: Mapped[int | None] = mapped_column(SmallInteger)
    latest_total: Mapped[int | None] = mapped_column(SmallInteger)
    latest_at: Mapped[datetime] = mapped_column(TS)
    latest_submission_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    # The second and third newest scored submissions (the course page's "falling" flag needs the
    # last three totals); null until the learner has that many.
    prev_total: Mapped[int | None] = mapped_column(SmallInteger)
    prev_at: Mapped[datetime | None] = mapped_column(TS)
    prev_submission_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    prev2_total: Mapped[int | None] = mapped_column(SmallInteger)
    prev2_at: Mapped[datetime | None] = mapped_column(TS)
    prev2_submission_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class Delivery(Base):
    """Outbox of signed result callbacks to the LMS; written in the scoring transaction."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    submission_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[DeliveryStatus] = mapped_column(_enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    # Fencing token of the current lease: only its holder's final update applies.
    lease_token: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(TS)


class WorkerHeartbeat(Base):
    """The last heartbeat of one worker pool process, so the gateway can show workers whose
    children cannot come up (it never imports the workers). `state`: starting | ready | failed."""

    __tablename__ = "worker_heartbeats"

    id: Mapped[str] = mapped_column(String(300), primary_key=True)  # "<node name>#<pool index>"
    queues: Mapped[str] = mapped_column(String(100))
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(TS)
    beat_at: Mapped[datetime] = mapped_column(TS, index=True)


class AnnotationBatch(Base):
    """Expert-annotated utterances under an object-storage prefix, validated before use."""

    __tablename__ = "annotation_batches"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    uri: Mapped[str] = mapped_column(String(2048), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[BatchStatus] = mapped_column(_enum(BatchStatus, "batch_status"), default=BatchStatus.registered)
    n_items: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    n_accepted: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    n_quarantined: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    problems: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # validation progress: utterances checked so far (in sorted id order), committed per chunk
    n_checked: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    progress_at: Mapped[datetime | None] = mapped_column(TS)
    used_by_job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("training_jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    validated_at: Mapped[datetime | None] = mapped_column(TS)


DEFAULT_ENGINE = "qwen2-audio"


class TrainingJob(Base):
    """One training run. The database allows one queued/running job per engine (a unique partial
    index), so concurrent triggers (gateway, beat) cannot both create one."""

    __tablename__ = "training_jobs"
    __table_args__ = (
        Index("ix_training_jobs_status_created", "status", "created_at"),
        Index(
            "uq_training_jobs_one_pending_per_engine",
            "engine",
            unique=True,
            postgresql_where=text("status IN ('queued', 'running')"),
            sqlite_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    engine: Mapped[str] = mapped_column(String(32), default=DEFAULT_ENGINE, server_default=text(f"'{DEFAULT_ENGINE}'"))
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"), default=JobStatus.queued)
    trigger: Mapped[str] = mapped_column(String(32))  # manual | batch | threshold | cli
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    step: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    total_steps: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    epoch: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    latest_loss: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    log: Mapped[str] = mapped_column(Text, default="", server_default=text("''"))
    checkpoint_uri: Mapped[str | None] = mapped_column(String(2048))
    report_uri: Mapped[str | None] = mapped_column(String(2048))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(TS)
    finished_at: Mapped[datetime | None] = mapped_column(TS)


class Adapter(Base):
    """A LoRA adapter in the registry. The database allows one `active` adapter per base model."""

    __tablename__ = "adapters"
    __table_args__ = (
        Index(
            "uq_adapters_one_active_per_base",
            "base_model",
            unique=True,
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    base_model: Mapped[str] = mapped_column(String(300))
    uri: Mapped[str] = mapped_column(String(2048))
    status: Mapped[AdapterStatus] = mapped_column(_enum(AdapterStatus, "adapter_status"), default=AdapterStatus.candidate)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    training_job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("training_jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(TS)


class UiSession(Base):
    """A browser sign-in to the teachers' pages, kept server-side so sign-out and key revocation
    end it at once. Only the token's SHA-256 is stored; the token lives in an HTTP-only cookie."""

    __tablename__ = "ui_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TS, index=True)


# --- LTI 1.3 Advantage (issue 13): the tool's keys, platform registrations, launches, grades ---


class LtiGradeStatus(str, enum.Enum):
    waiting = "waiting"  # the submission is not finished yet
    pending = "pending"  # scored: the score is to be posted (retries back off)
    delivered = "delivered"
    failed = "failed"  # gave up (refused for good, or attempts used up): visible to ops
    skipped = "skipped"  # the recording failed: nothing is posted


class LtiToolKey(Base):
    """The tool's RSA signing keys. The newest active one signs; retired ones stay in the JWKS
    until removed, so platforms holding a cached key set keep verifying during a rotation."""

    __tablename__ = "lti_tool_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kid: Mapped[str] = mapped_column(String(100), unique=True)
    private_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(TS)


class LtiRegistration(Base):
    """One LMS (issuer + client id) registered for a tenant, with the deployments it may launch."""

    __tablename__ = "lti_registrations"
    __table_args__ = (UniqueConstraint("issuer", "client_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    issuer: Mapped[str] = mapped_column(String(500))
    client_id: Mapped[str] = mapped_column(String(200))
    deployment_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    auth_login_url: Mapped[str] = mapped_column(String(2048))
    auth_token_url: Mapped[str] = mapped_column(String(2048))
    keyset_url: Mapped[str] = mapped_column(String(2048))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class LtiLoginState(Base):
    """An OIDC login in flight: the state and nonce we sent, bound to the browser's cookie."""

    __tablename__ = "lti_login_states"

    state: Mapped[str] = mapped_column(String(100), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(100), unique=True)
    registration_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("lti_registrations.id", ondelete="CASCADE"))
    browser_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TS, index=True)
    used_at: Mapped[datetime | None] = mapped_column(TS)  # set once by the launch: a replay finds it used


class LtiLaunch(Base):
    """A validated launch: what the recording (or deep-linking) page may do, found by its token's hash."""

    __tablename__ = "lti_launches"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    registration_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("lti_registrations.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    deployment_id: Mapped[str] = mapped_column(String(200))
    message_type: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[str] = mapped_column(String(200))
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    context_id: Mapped[str | None] = mapped_column(String(200))
    resource_link_id: Mapped[str | None] = mapped_column(String(200))
    claims: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the LTI claims the pages use
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TS)


class LtiGrade(Base):
    """AGS passback outbox for one launch-created submission (retried like result callbacks)."""

    __tablename__ = "lti_grades"
    __table_args__ = (Index("ix_lti_grades_due", "status", "next_attempt_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    submission_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), unique=True)
    registration_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("lti_registrations.id", ondelete="CASCADE"))
    lineitem_url: Mapped[str] = mapped_column(String(2048))
    user_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[LtiGradeStatus] = mapped_column(_enum(LtiGradeStatus, "lti_grade_status"), default=LtiGradeStatus.waiting)
    score_given: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(TS)
