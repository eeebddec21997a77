"""Request and response bodies of the gateway's JSON API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from db.results import SCALES, as_utc
from pronunciation.schema import Granularity

# Every timestamp the API writes is UTC with its offset: SQLite hands rows back naive (stored in
# UTC), and pydantic would write a naive datetime without any offset.
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]

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
        description="`s3://bucket/key` in one of the tenant's allowed buckets (APA_STORAGE_BACKEND=s3), or a path "
        "in the tenant's own folder (APA_STORAGE_BACKEND=local, the embedded mode).",
    )
    granularity: Granularity = Granularity.FULL
    callback_url: str | None = Field(default=None, max_length=2048, description="https URL for the signed result, on the tenant's registered callback origin.")

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
    """One score on 0-10 at every level (sentence, word and phone; see `scales`)."""

    value: int = Field(ge=0, le=10, description="The model's argmax value, an integer on 0-10.")
    expected: float = Field(description="The probability-weighted mean over the allowed values, on 0-10.")


class SentenceOut(BaseModel):
    """Sentence aspects on 0-10 (speechocean762's sentence scale)."""

    accuracy: Score | None
    fluency: Score | None
    prosody: Score | None
    completeness: Score | None
    total: Score | None


class PhoneOut(BaseModel):
    phone: str
    accuracy: Score = Field(
        description="Phone accuracy on 0-10: speechocean762's 0-2 annotation scale x 5 (0 wrong, 5 heavy "
        "accent, 10 right). Annotation batches keep 0-2; they are converted when they are read."
    )


class WordOut(BaseModel):
    """Word accuracy and total on 0-10, stress 5 or 10 (speechocean762's word scale)."""

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
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    model_ms: float | None


class ScalesOut(BaseModel):
    """The range of every score level, stated in the response and in the callback alike."""

    sentence: str = SCALES["sentence"]
    word: str = SCALES["word"]
    phone: str = SCALES["phone"]


class DeliveryOut(BaseModel):
    """The result callback to the LMS: whether it arrived, how often it was tried, why it failed."""

    id: str = Field(description="The delivery id, also the callback's `webhook-id`.")
    url: str
    status: str = Field(description="`pending` (not yet delivered; see `last_error`), `delivered` or `failed` (given up).")
    failing: bool = Field(description="True while the last try failed (pending with an error) or when given up.")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: UtcDatetime | None
    delivered_at: UtcDatetime | None


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
    scales: ScalesOut
    scores: ScoresOut
    delivery: DeliveryOut | None = Field(
        default=None,
        description="The result callback's state (GET only; null before scoring ends or without a callback URL). "
        "Not part of the callback body itself.",
    )


class SubmissionList(BaseModel):
    """Submissions found by the LMS's own id, within the caller's scope."""

    items: list[SubmissionOut]


class HistoryItem(BaseModel):
    id: str
    submission_id: str
    tenant_id: str
    course_id: str
    assignment_id: str | None
    status: str
    granularity: str
    created_at: UtcDatetime
    finished_at: UtcDatetime | None
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
    latest_at: UtcDatetime | None
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
