"""Request and response bodies of the gateway's JSON API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from pronunciation.schema import Granularity

Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class SubmissionIn(BaseModel):
    """The LMS webhook body. Unknown fields are ignored, so an LMS may send more than we read."""

    model_config = ConfigDict(extra="ignore")

    submission_id: Identifier = Field(description="The LMS's own id for this submission (idempotency key).")
    learner_id: Identifier
    course_id: Identifier
    assignment_id: Identifier | None = None
    reference_text: str = Field(description="What the learner was asked to read.")
    reference_phones: list[list[str]] | None = Field(
        default=None, description="Optional ARPAbet phones, one list per word of the reference text."
    )
    audio_uri: str = Field(
        min_length=1, max_length=2048,
        description="`s3://bucket/key` in one of the tenant's allowed buckets (or a local path in the embedded mode).",
    )
    granularity: Granularity = Granularity.FULL
    callback_url: str | None = Field(default=None, max_length=2048, description="http(s) URL for the signed result.")

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("callback_url must be an absolute http(s) URL")
        return value


class SubmissionAccepted(BaseModel):
    id: str
    status: str
    status_url: str
    duplicate: bool = Field(description="True when this delivery repeats an earlier one (answered 200).")


class Score(BaseModel):
    value: int
    expected: float


class SentenceOut(BaseModel):
    accuracy: Score | None
    fluency: Score | None
    prosody: Score | None
    completeness: Score | None
    total: Score | None


class PhoneOut(BaseModel):
    phone: str
    accuracy: Score


class WordOut(BaseModel):
    position: int
    text: str
    accuracy: Score | None
    stress: Score | None
    total: Score | None
    phones: list[PhoneOut]


class ScoresOut(BaseModel):
    sentence: SentenceOut | None
    words: list[WordOut]


class ErrorOut(BaseModel):
    code: str
    message: str


class TimingsOut(BaseModel):
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    model_ms: float | None


class SubmissionOut(BaseModel):
    """`db.results.submission_result`: also the body of the result callback to the LMS."""

    id: str
    submission_id: str
    tenant_id: str
    learner_id: str
    course_id: str
    assignment_id: str | None
    reference_text: str
    granularity: str
    status: str
    error: ErrorOut | None
    attempts: int
    adapter_version: str | None
    model_name: str | None
    engine: str | None = None
    model_version: str | None = None
    timings: TimingsOut
    scores: ScoresOut


class HistoryItem(BaseModel):
    id: str
    submission_id: str
    tenant_id: str
    course_id: str
    assignment_id: str | None
    status: str
    granularity: str
    created_at: datetime
    finished_at: datetime | None
    error: ErrorOut | None
    sentence: SentenceOut | None


class AspectAggregate(BaseModel):
    n: int = Field(description="Scored submissions in the window that have this aspect.")
    mean: float | None
    latest: float | None = Field(description="The newest scored submission's value.")
    trend: float | None = Field(
        description="Least-squares slope of the value per scored submission (points per submission); "
        "null with fewer than two."
    )


class LearnerHistory(BaseModel):
    learner_id: str
    items: list[HistoryItem]
    next_cursor: str | None
    aggregates: dict[str, AspectAggregate]
    trend_unit: str = "points per scored submission"


class CourseLearner(BaseModel):
    tenant_id: str
    learner_id: str
    count: int = Field(description="Scored submissions of this learner in the course.")
    latest_at: datetime | None
    latest: dict[str, int | None]
    mean: dict[str, float | None]


class CourseSummary(BaseModel):
    course_id: str
    learners: list[CourseLearner]


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` inlined, for an `openapi_extra` request body."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)
