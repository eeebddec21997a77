"""LoRA supervised fine-tuning of Qwen2-Audio on expert scores (the paper's section 3.2 settings).

- LoRA from `pronunciation.adapters.new_lora_config` (rank 8, alpha 16, the language model's
  linear layers only: the adapter is then servable by the same runtime and by vLLM);
- AdamW, lr 1e-4, cosine schedule with 10 % warm-up, batch 1 x 8 gradient-accumulation steps,
  3 epochs (all overridable per job), gradient clipping at 1.0 (transformers.Trainer's default);
- bf16 base weights on CUDA (LoRA weights stay fp32: peft upcasts adapters), fp32 on CPU;
- loss on the answer tokens only: `encode_training_example` labels the prompt -100 and tokenizes
  the answer exactly as constrained decoding forces it.

Batch size 1 means no padding at all, so a micro-batch is one example; the audio tower is frozen
(LoRA adapts the language model only) but still runs each step: Qwen2-Audio's forward has no
audio-embedding input. Encoded examples (token ids + log-mel features, ~1.5 MB each) are cached
up to `encode_cache_items`, which makes later epochs cheaper on small datasets.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch

from pronunciation.adapters import new_lora_config
from pronunciation.output_format import build_template
from pronunciation.prompts import build_prompt
from pronunciation.schema import Granularity
from pronunciation.training_examples import (
    collate_training_examples,
    encode_training_example,
)
from training_jobs.dataset import Example, target_values
from training_jobs.loop import Stage

log = logging.getLogger(__name__)



def load_trainable_model(model_path: str, device: torch.device, *, lora_config=None, dtype: torch.dtype | None = None):
    """(PeftModel with fresh LoRA weights, processor). Seed torch first for a reproducible init.

    `dtype` defaults to bf16 on CUDA and fp32 on CPU (the paper trains in bf16 on one GPU).
    """
    from peft import get_peft_model
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    kwargs = {"dtype": dtype}
    if device.type == "cuda":
        kwargs["device_map"] = {"": str(device)}
    base = Qwen2AudioForConditionalGeneration.from_pretrained(model_path, **kwargs)
    if device.type != "cuda":
        base = base.to(device)
    base.config.use_cache = False  # no KV cache while training
    model = get_peft_model(base, lora_config or new_lora_config())
    processor = AutoProcessor.from_pretrained(model_path)
    return model, processor


class ExampleEncoder:
    """`encode_training_example` for (example, answer values), with a bounded LRU cache."""

    def __init__(self, processor, granularity: Granularity, cache_items: int = 512) -> None:
        self.processor = processor
        self.granularity = Granularity(granularity)
        self.cache_items = cache_items
        self._cache: OrderedDict[tuple, dict[str, torch.Tensor]] = OrderedDict()

    def encode(self, example: Example, values: dict[str, int], key: tuple | None = None) -> dict[str, torch.Tensor]:
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        prompt = build_prompt(example.reference, self.granularity)
        template = build_template(example.reference, self.granularity)
        encoded = encode_training_example(
            self.processor, prompt.instructions, prompt.request, example.audio, template, values
        )
        if key is not None and self.cache_items:
            self._cache[key] = encoded
            while len(self._cache) > self.cache_items:
                self._cache.popitem(last=False)
        return encoded

    def batch(self, encoded: Sequence[dict[str, torch.Tensor]], device: torch.device) -> dict[str, torch.Tensor]:
        pad = self.processor.tokenizer.pad_token_id
        batch = collate_training_examples(list(encoded), pad if pad is not None else 0)
        return {k: v.to(device) for k, v in batch.items()}


def sft_loss_fn(model, encoder: ExampleEncoder, examples: Sequence[Example], device: torch.device) -> Callable[[int], torch.Tensor]:
    """Micro-batch i -> mean cross-entropy over the answer tokens of example i."""
    targets = [target_values(e.annotation, encoder.granularity) for e in examples]

    def loss(i: int) -> torch.Tensor:
        encoded = encoder.encode(examples[i], targets[i], key=("sft", i))
        return model(**encoder.batch([encoded], device)).loss

    return loss


def sft_stage(model, encoder: ExampleEncoder, examples: Sequence[Example], device: torch.device, *,
              epochs: int, lr: float, grad_accum: int, warmup_ratio: float) -> Stage:
    return Stage(
        name="sft", n_items=len(examples), epochs=epochs, lr=lr, grad_accum=grad_accum,
        warmup_ratio=warmup_ratio, loss_fn=sft_loss_fn(model, encoder, examples, device),
    )
