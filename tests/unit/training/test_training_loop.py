"""The training loop on the tiny model: an interrupted run resumed from its checkpoint ends with
EXACTLY the weights and loss history of an uninterrupted run (SFT then SimPO, across the stage
boundary), and the paper's schedule shape (warm-up then cosine decay)."""

from __future__ import annotations

import math

import pytest
import torch

from pronunciation.schema import Granularity
from tests.training_support import clip_samples, pick_clips, so_entry
from training_jobs.annotations import check_item
from training_jobs.dataset import Example
from training_jobs.loop import Trainer
from training_jobs.sft import ExampleEncoder, load_trainable_model, sft_stage
from training_jobs.simpo import simpo_stage


@pytest.fixture(scope="module")
def examples():
    out = []
    for i, row in enumerate(pick_clips(5, 5, max_seconds=4.0)):
        ann, problems = check_item(row["utt_id"], so_entry(row, fluency=4 + i))
        assert not problems
        out.append(Example(row["utt_id"], "b", ann.speaker, clip_samples(row), ann))
    return out


class Stop(Exception):
    pass


def _trainer(model_path, examples, tmp, *, init_seed=0, progress=None, checkpoint_every=2):
    torch.manual_seed(init_seed)
    model, processor = load_trainable_model(str(model_path), torch.device("cpu"))
    enc = ExampleEncoder(processor, Granularity.SENTENCE_FLUENCY)
    dev = torch.device("cpu")
    stages = [
        sft_stage(model, enc, examples, dev, epochs=2, lr=5e-3, grad_accum=2, warmup_ratio=0.1),
        simpo_stage(model, enc, examples, dev, epochs=1, lr=5e-3, grad_accum=2, warmup_ratio=0.1,
                    beta=0.1, gamma=0.5, lam=0.1, seed=0),
    ]
    return Trainer(model, stages, seed=3, checkpoint_every=checkpoint_every, checkpoint_dir=tmp, keep_checkpoints=10,
                   progress=progress), model


def _lora(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k}


@pytest.mark.parametrize("stop_at", [3, 7])  # inside SFT; inside SimPO (after the stage-boundary checkpoint)
def test_resume_is_exact(tiny_model_path, examples, tmp_path, stop_at) -> None:
    torch.set_num_threads(1)
    full, model_a = _trainer(tiny_model_path, examples, tmp_path / "a")
    assert full.total_steps == 2 * 3 + 3  # ceil(5 / 2) = 3 steps per epoch
    state_a = full.run()
    weights_a = _lora(model_a)

    def stop(step, total, epoch, loss):
        if step == stop_at:
            raise Stop

    interrupted, _ = _trainer(tiny_model_path, examples, tmp_path / "b", progress=stop)
    with pytest.raises(Stop):
        interrupted.run()
    ckpts = sorted((tmp_path / "b").glob("step-*"))
    last = ckpts[-1]
    assert int(last.name.split("-")[1]) < stop_at

    seen = []
    resumed, model_c = _trainer(tiny_model_path, examples, tmp_path / "b", init_seed=99,
                                progress=lambda step, total, epoch, loss: seen.append((step, total)))
    state_c = resumed.run(last)
    assert state_c.resumed_from == int(last.name.split("-")[1])
    assert seen[0][0] == state_c.resumed_from + 1 and seen[-1] == (full.total_steps, full.total_steps)
    assert state_c.global_step == state_a.global_step == full.total_steps
    assert [round(x[2], 6) for x in state_c.losses] == [round(x[2], 6) for x in state_a.losses]
    weights_c = _lora(model_c)
    assert weights_a.keys() == weights_c.keys()
    for k in weights_a:
        assert torch.equal(weights_a[k], weights_c[k]), k


def test_each_epoch_visits_every_item_once(tiny_model_path, examples, tmp_path) -> None:
    trainer, _ = _trainer(tiny_model_path, examples, tmp_path)
    for k, stage in enumerate(trainer.stages):
        for epoch in range(stage.epochs):
            steps = range(epoch * stage.steps_per_epoch, (epoch + 1) * stage.steps_per_epoch)
            items = [i for s in steps for i in trainer.micro_batches(k, s)]
            assert sorted(items) == list(range(len(examples)))


def test_cosine_schedule_with_warmup(tiny_model_path, examples, tmp_path) -> None:
    trainer, _ = _trainer(tiny_model_path, examples, tmp_path)
    stage = trainer.stages[0]
    opt, sched = trainer._optimizer(stage)
    lrs = []
    for _ in range(stage.total_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert stage.warmup_steps == math.ceil(0.1 * stage.total_steps) == 1
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(5e-3)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))  # decays after warm-up
