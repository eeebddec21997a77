"""The scoring engines behind one interface: (audio, reference, granularity) -> `Assessment`.

- `qwen2-audio`: today's runtime (Qwen2-Audio + LoRA adapter, constrained decoding), unchanged;
  the engine for GPU deployments.
- `gop`: goodness-of-pronunciation features from pocketsphinx's en-US acoustic model and a small
  trained head (pronunciation.gop); real scores on a CPU, the embedded default.

`APA_ENGINE` picks one (fleet.settings). Callers (workers, CLI, evaluation) hold an `Engine` and
call `assess`; every result names its engine and model version, so a stored score always says
what produced it. No caller branches on the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pronunciation.assess import AssessmentRequest, AssessmentResult

if TYPE_CHECKING:
    from pronunciation.gop.features import FeatureExtractor
    from pronunciation.gop.head import GopHead
    from pronunciation.runtime import ScoringModel

ENGINES: tuple[str, ...] = ("gop", "qwen2-audio")
DEFAULT_ENGINE = "gop"
GOP_MODEL_NAME = "gop: pocketsphinx en-us acoustic model + trained head"


@runtime_checkable
class Engine(Protocol):
    """What every engine offers its callers."""

    name: str

    @property
    def model_version(self) -> str: ...

    def assess(self, requests: Sequence[AssessmentRequest]) -> list[AssessmentResult]: ...


class QwenEngine:
    """Qwen2-Audio through the existing runtime; the model version is the active adapter (or base)."""

    name = "qwen2-audio"

    def __init__(self, model: ScoringModel) -> None:
        self.model = model

    @property
    def model_version(self) -> str:
        return self.model.active_adapter_version or "base"

    def assess(self, requests: Sequence[AssessmentRequest]) -> list[AssessmentResult]:
        from dataclasses import replace

        from pronunciation.assess import assess_with_model

        return [replace(r, engine=self.name, model_version=r.adapter_version or "base")
                for r in assess_with_model(self.model, list(requests))]


class GopEngine:
    """GOP features + trained head; deterministic, CPU only, one utterance at a time."""

    name = "gop"

    def __init__(self, head: GopHead | None = None, extractor: FeatureExtractor | None = None) -> None:
        from threadpoolctl import threadpool_limits

        from pronunciation.gop.features import FeatureExtractor
        from pronunciation.gop.head import shipped_head

        # The model's matrix products are small: extra BLAS threads only spin on the other cores
        # (measured: twice the CPU time per utterance), so a gop process keeps BLAS to one thread.
        self._blas_limit = threadpool_limits(limits=1, user_api="blas")
        self.head = head or shipped_head()
        self.extractor = extractor or FeatureExtractor()

    @property
    def model_version(self) -> str:
        return self.head.version

    def assess(self, requests: Sequence[AssessmentRequest]) -> list[AssessmentResult]:
        from pronunciation.gop.head import slot_values
        from pronunciation.output_format import assessment_from_slots, render

        out = []
        for r in requests:
            scores = self.head.predict(self.extractor.extract(r.audio, r.reference))
            a = assessment_from_slots(r.reference, r.granularity, slot_values(scores, r.reference, r.granularity))
            out.append(AssessmentResult(assessment=a, raw_text=render(a, r.reference), adapter_version=None,
                                        model_is_tiny=False, engine=self.name, model_version=self.model_version,
                                        model_name=GOP_MODEL_NAME))
        return out


def load_engine(name: str, *, model_path: str | None = None, device: str = "auto", head_dir: str | None = None,
                tiny: bool = False, trim_audio_window: bool = False) -> Engine:
    """Build the named engine (`qwen2-audio` needs `model_path`: a folder or hub id; with `tiny` the
    embedded tiny model is built there on first use). Workers, the CLI and evaluation all load
    through here, so no caller branches on the engine."""
    if name == "gop":
        from pathlib import Path

        from pronunciation.gop.head import GopHead, shipped_head

        return GopEngine(GopHead.load(Path(head_dir)) if head_dir else shipped_head())
    if name == "qwen2-audio":
        if not model_path:
            raise ValueError("the qwen2-audio engine needs a model path")
        from pronunciation.runtime import ScoringModel
        from pronunciation.tiny_model import ensure_model_files

        path = ensure_model_files(model_path, tiny=tiny)
        return QwenEngine(ScoringModel.load(path, device=device, trim_audio_window=trim_audio_window))
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
