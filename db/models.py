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
        # A course's recent results.
        Index("ix_submissions_course_recent", "tenant_id", "course_id", "created_at"),
        # The sweeper and the batch claimer: queued/running by age.
        Index("ix_submissions_status_age", "status", "updated_at"),
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
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(TS)


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
    used_by_job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("training_jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    validated_at: Mapped[datetime | None] = mapped_column(TS)


class TrainingJob(Base):
    __tablename__ = "training_jobs"
    __table_args__ = (Index("ix_training_jobs_status_created", "status", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
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
