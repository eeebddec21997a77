"""Reference + audio in, Assessment out: the one path the CLI, the workers and training share.

It joins the text side (lexicon, prompts, output format) to the model runtime, so every caller
builds prompts and templates the same way and reads scores back the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pronunciation.lexicon import Reference
from pronunciation.output_format import assessment_from_slots, build_template
from pronunciation.prompts import build_prompt
from pronunciation.schema import Assessment, Granularity

if TYPE_CHECKING:
    from pronunciation.runtime import ScoringInput, ScoringModel


@dataclass(frozen=True)
class AssessmentRequest:
    audio: np.ndarray  # 16 kHz mono float32, as pronunciation.audio.load_audio returns it
    reference: Reference
    granularity: Granularity = Granularity.FULL


@dataclass(frozen=True)
class AssessmentResult:
    assessment: Assessment
    raw_text: str
    adapter_version: str | None
    model_is_tiny: bool
    engine: str = "qwen2-audio"  # which engine scored it (pronunciation.engines)
    model_version: str | None = None  # the engine's model version (adapter, or gop head digest)
    model_name: str | None = None  # the engine's own model name; None: the worker's configured base model


def scoring_input(request: AssessmentRequest) -> ScoringInput:
    from pronunciation.runtime import ScoringInput

    prompt = build_prompt(request.reference, request.granularity)
    template = build_template(request.reference, request.granularity)
    return ScoringInput(
        audio=request.audio, instructions=prompt.instructions, request=prompt.request, template=template
    )


def assess(model, requests: list[AssessmentRequest]) -> list[AssessmentResult]:
    """Score several recordings with an engine (pronunciation.engines), or a bare Qwen2-Audio
    `ScoringModel`, which is scored as the `qwen2-audio` engine."""
    if hasattr(model, "assess"):
        return model.assess(requests)
    from pronunciation.engines import QwenEngine

    return QwenEngine(model).assess(requests)


def assess_with_model(model: ScoringModel, requests: list[AssessmentRequest]) -> list[AssessmentResult]:
    """Score several recordings in one batched Qwen2-Audio call."""
    outputs = model.score([scoring_input(r) for r in requests])
    return [
        AssessmentResult(
            assessment=assessment_from_slots(r.reference, r.granularity, out.values),
            raw_text=out.text,
            adapter_version=out.adapter_version,
            model_is_tiny=out.model_is_tiny,
        )
        for r, out in zip(requests, outputs, strict=True)
    ]
