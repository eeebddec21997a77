"""The scoring runtime: Qwen2-Audio (+ LoRA adapters) answering a Template per utterance.

One code path for the real `Qwen/Qwen2-Audio-7B-Instruct` weights and the tiny random model that
tests and demos build offline (`pronunciation.tiny_model`). bf16 on CUDA, fp32 on CPU, eval mode.

    model = ScoringModel.load("/models/qwen2-audio", adapter_path="/adapters/v3", adapter_version="v3")
    [out] = model.score([ScoringInput(audio, instructions, request, template)])
    out.values["sentence.accuracy"]  # (argmax value, expected value)

Adapters (LoRA, peft) are switched without reloading the base model: `load_adapter`,
`activate`, `unload_adapter`, `active_adapter_version`. Every output records the adapter version
that produced it (None = base model).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pronunciation.decoding import ConstrainedDecoder
from pronunciation.free_generation import free_generate
from pronunciation.prompt_inputs import PreparedPrompt, prepare_prompts
from pronunciation.template import Template
from pronunciation.tiny_model import TINY_MARKER, is_tiny_model

log = logging.getLogger(__name__)

TINY_WARNING = (
    "Loaded the TINY random Qwen2-Audio from %s: it is for tests and demos only and its scores MEAN NOTHING."
)


@dataclass(frozen=True, eq=False)
class ScoringInput:
    audio: np.ndarray  # 16 kHz mono float32, at most 30 s
    instructions: str  # fixed text shared by requests (goes first: shared prompt prefix)
    request: str  # per-utterance text (reference text, phones, ...)
    template: Template


@dataclass(frozen=True)
class ScoringOutput:
    values: dict[str, tuple[int, float]]  # slot name -> (argmax value, expected value)
    text: str  # template.render(argmax values): the raw model answer
    adapter_version: str | None  # None: the base model without adapter
    model_is_tiny: bool


def resolve_device(device: str = "auto"):
    """`auto` is CUDA when present, else CPU; shared by scoring and training so both agree."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_dtype(dtype, device):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        return getattr(torch, dtype)
    return dtype


class ScoringModel:
    """A loaded Qwen2-Audio with its processor, optional LoRA adapters and a constrained decoder."""

    def __init__(self, model, processor, *, model_path: str, model_is_tiny: bool, max_batch_size: int = 8,
                 trim_audio_window: bool = False):
        self._base = model  # Qwen2AudioForConditionalGeneration (LoRA layers get injected in place)
        self._model = model  # the base model, or the PeftModel around it once an adapter is loaded
        self.processor = processor
        self.model_path = model_path
        self.model_is_tiny = model_is_tiny
        self.max_batch_size = max_batch_size
        # Off by default: the encoder gets Qwen2-Audio's full 30 s window. On, `score` cuts the window
        # to the longest clip of the call (`decoding.window_frames`): same scores up to float
        # rounding, a fraction of the encoder's cost for short clips (benchmarks/bench_decoding.py).
        self.trim_audio_window = trim_audio_window
        self._active: str | None = None
        self._lock = threading.RLock()
        self.decoder = ConstrainedDecoder(model, processor)

    # -- loading -------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        model_path: str | os.PathLike,
        *,
        device: str = "auto",
        dtype="auto",
        adapter_path: str | os.PathLike | None = None,
        adapter_version: str | None = None,
        max_batch_size: int = 8,
        trim_audio_window: bool = False,
    ) -> ScoringModel:
        """Load model + processor from a local folder (or hub id, if the hub is reachable).

        The tiny test model (folder with the `apa_fleet_tiny.json` marker) loads the same way; it
        is flagged as `model_is_tiny` and a warning says its scores mean nothing.
        """
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        if adapter_version is not None and adapter_path is None:
            raise ValueError("adapter_version given without adapter_path")
        dev = resolve_device(device)
        torch_dtype = _resolve_dtype(dtype, dev)
        model_path = str(model_path)
        tiny = is_tiny_model(model_path)
        if tiny:
            log.warning(TINY_WARNING, model_path)
        kwargs = {"dtype": torch_dtype}
        if dev.type == "cuda":
            kwargs["device_map"] = {"": str(dev)}
        model = Qwen2AudioForConditionalGeneration.from_pretrained(model_path, **kwargs)
        if dev.type != "cuda":
            model = model.to(dev)
        model.eval()
        processor = AutoProcessor.from_pretrained(model_path)
        self = cls(model, processor, model_path=model_path, model_is_tiny=tiny, max_batch_size=max_batch_size,
                   trim_audio_window=trim_audio_window)
        if adapter_path is not None:
            self.load_adapter(adapter_path, adapter_version or Path(adapter_path).name)
            self.activate(adapter_version or Path(adapter_path).name)
        return self

    @property
    def model(self):
        """The model that runs: the PeftModel once an adapter was loaded, else the base model."""
        return self._model

    @property
    def base_model(self):
        """The Qwen2AudioForConditionalGeneration (carrying the LoRA layers once adapters are loaded)."""
        return self._base

    @property
    def device(self):
        return next(self._base.parameters()).device

    # -- adapters ------------------------------------------------------------------------------

    @property
    def active_adapter_version(self) -> str | None:
        return self._active

    @property
    def adapter_versions(self) -> tuple[str, ...]:
        peft_config = getattr(self._model, "peft_config", None)
        return tuple(peft_config) if peft_config else ()

    def load_adapter(self, path: str | os.PathLike, version: str, *, activate: bool = False) -> None:
        """Load a LoRA adapter under the name `version` (the base model is not reloaded)."""
        from peft import PeftModel

        version = str(version)
        with self._lock:
            if version in self.adapter_versions:
                raise ValueError(f"adapter version {version!r} is already loaded; unload it first")
            if self._model is self._base:
                self._model = PeftModel.from_pretrained(self._base, str(path), adapter_name=version, is_trainable=False)
                self.decoder.model = self._model
            else:
                self._model.load_adapter(str(path), adapter_name=version, is_trainable=False)
            self._model.eval()
            self.decoder.clear_prefix_cache(("adapter", version))
            # peft makes the first adapter active: put back whatever was active before
            self._apply_active()
            log.info("loaded adapter %s from %s", version, path)
            if activate:
                self.activate(version)

    def activate(self, version: str | None) -> None:
        """Make `version` the adapter that scores (None: the base model)."""
        with self._lock:
            if version is not None and version not in self.adapter_versions:
                raise KeyError(f"adapter version {version!r} is not loaded (loaded: {self.adapter_versions})")
            self._active = version
            self._apply_active()
            log.info("active adapter: %s", version or "none (base model)")

    def unload_adapter(self, version: str) -> None:
        with self._lock:
            if version not in self.adapter_versions:
                raise KeyError(f"adapter version {version!r} is not loaded")
            if len(self.adapter_versions) == 1:
                # last adapter: take the LoRA layers out and go back to the plain base model
                self._base = self._model.unload()
                self._model = self._base
                self.decoder.model = self._base
            else:
                with warnings.catch_warnings():  # peft warns when the adapter it last had active goes
                    warnings.simplefilter("ignore", UserWarning)
                    self._model.delete_adapter(version)
            if self._active == version:
                self._active = None
            self.decoder.clear_prefix_cache(("adapter", version))
            self._apply_active()

    def _apply_active(self) -> None:
        if self._model is self._base:
            return
        if self._active is not None:
            self._model.base_model.enable_adapter_layers()
            self._model.set_adapter(self._active)
        else:
            self._model.base_model.disable_adapter_layers()
        self._model.eval()

    def _cache_key(self):
        return ("adapter", self._active) if self._active is not None else ("base",)

    # -- scoring -------------------------------------------------------------------------------

    def prepare(self, item: ScoringInput) -> PreparedPrompt:
        return self.prepare_many([item])[0]

    def prepare_many(self, items: Sequence[ScoringInput], *, trim_window: bool | None = None) -> list[PreparedPrompt]:
        """Prompts for a batch in one feature-extraction call (`prompt_inputs.prepare_prompts`)."""
        trim = self.trim_audio_window if trim_window is None else trim_window
        return prepare_prompts(self.processor, [x.audio for x in items], [x.instructions for x in items],
                               [x.request for x in items], trim_window=trim)

    def score(self, inputs: Sequence[ScoringInput], *, batch_size: int | None = None) -> list[ScoringOutput]:
        """Constrained decoding of each input's template; batched by `batch_size` (default max_batch_size)."""
        batch_size = batch_size or self.max_batch_size
        prepared = self.prepare_many(inputs)
        # Batch inputs with the same instructions together, so each batch shares one cached prefix,
        # and, within those, inputs with similar slot counts (one forward per slot: a batch runs as
        # many steps as its longest template, so mixed lengths would leave rows idle).
        order = sorted(range(len(inputs)), key=lambda i: (prepared[i].prefix_ids, len(inputs[i].template.slots), i))
        outputs: list[ScoringOutput | None] = [None] * len(inputs)
        with self._lock:  # the adapter cannot switch in the middle of a call
            version, key = self._active, self._cache_key()
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                results = self.decoder.decode(
                    [prepared[i] for i in idx], [inputs[i].template for i in idx], cache_key=key
                )
                for i, r in zip(idx, results):
                    outputs[i] = ScoringOutput(
                        values=r.values, text=r.text, adapter_version=version, model_is_tiny=self.model_is_tiny
                    )
        return outputs  # type: ignore[return-value]

    def free_generate(self, inputs: Sequence[ScoringInput], *, max_new_tokens: int, exact_length: bool = True) -> list[str]:
        """Unconstrained greedy generation on the same prompts (benchmark baseline)."""
        prepared = self.prepare_many(inputs, trim_window=False)  # `generate` takes the stock 30 s window
        with self._lock:
            return free_generate(self._model, self.processor, prepared, max_new_tokens=max_new_tokens, exact_length=exact_length)


__all__ = ["ScoringInput", "ScoringModel", "ScoringOutput", "TINY_MARKER"]
