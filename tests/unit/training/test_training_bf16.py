"""The bf16 path (the paper's, used on CUDA) exercised on CPU with the tiny model: bf16 base
weights with fp32 LoRA weights train (SFT and SimPO losses finite, LoRA weights move), the saved
adapter is fp32-loadable, and the runtime scores with it on the bf16 base after `unload()`."""

from __future__ import annotations

import math

import torch

from pronunciation.schema import Granularity
from tests.training_support import clip_samples, pick_clips, so_entry
from training_jobs.annotations import check_item
from training_jobs.dataset import Example
from training_jobs.evaluate import evaluate_adapters
from training_jobs.loop import Trainer
from training_jobs.sft import ExampleEncoder, load_trainable_model, sft_stage
from training_jobs.simpo import simpo_stage


def test_bf16_training_and_scoring(tiny_model_path, tmp_path) -> None:
    torch.manual_seed(0)
    examples = []
    for i, row in enumerate(pick_clips(4, 4, max_seconds=4.0)):
        ann, _ = check_item(row["utt_id"], so_entry(row, fluency=3 + 2 * i))
        examples.append(Example(row["utt_id"], "b", ann.speaker, clip_samples(row), ann))
    dev = torch.device("cpu")
    model, processor = load_trainable_model(str(tiny_model_path), dev, dtype=torch.bfloat16)
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all(p.dtype == torch.float32 for p in lora.values())  # peft keeps adapters in fp32
    assert next(p for n, p in model.named_parameters() if "q_proj.base_layer" in n).dtype == torch.bfloat16
    before = {n: p.detach().clone() for n, p in lora.items()}
    enc = ExampleEncoder(processor, Granularity.SENTENCE)
    losses = []
    stages = [sft_stage(model, enc, examples, dev, epochs=1, lr=1e-2, grad_accum=2, warmup_ratio=0.0),
              simpo_stage(model, enc, examples, dev, epochs=1, lr=1e-2, grad_accum=2, warmup_ratio=0.0,
                          beta=0.1, gamma=0.5, lam=0.1, seed=0)]
    Trainer(model, stages, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=100,
            progress=lambda *a: losses.append(a[3])).run()
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert any(not torch.equal(before[n], p) for n, p in lora.items())
    model.save_pretrained(str(tmp_path / "adapter"))
    base = model.unload()
    results = evaluate_adapters(base, processor, model_path=str(tiny_model_path), examples=examples,
                                granularity=Granularity.SENTENCE, adapters={"cand": tmp_path / "adapter", "base": None})
    assert results["cand"]["sentence.fluency"]["expected"]["n"] == 4
    assert results["cand"] != results["base"]
