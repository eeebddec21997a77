"""Training examples use the prompt layout and answer tokenization that decoding forces."""

from __future__ import annotations

import numpy as np
import torch

from pronunciation.prompt_inputs import prepare_prompt
from pronunciation.training_examples import (
    IGNORE_INDEX,
    collate_training_examples,
    encode_training_example,
)


def _values(template, rng):
    return {s.name: int(rng.choice(s.values)) for s in template.slots}


def test_labels_decode_to_rendered_answer(processor, h):
    rng = np.random.default_rng(2)
    tok = processor.tokenizer
    template = h.full_template(["MARK", "ELEPHANT"])
    values = _values(template, rng)
    values["sentence.accuracy"] = 10  # a two-token value
    audio = h.make_audio(rng, 2.0)
    request = "Reference text: MARK ELEPHANT."
    ex = encode_training_example(processor, h.INSTRUCTIONS, request, audio, template, values)
    labels = ex["labels"]
    assert labels.shape == ex["input_ids"].shape == ex["attention_mask"].shape
    n_prompt = int((labels == IGNORE_INDEX).sum())
    assert (labels[:n_prompt] == IGNORE_INDEX).all() and (labels[n_prompt:] != IGNORE_INDEX).all()
    answer = labels[n_prompt:].tolist()
    assert tok.decode(answer) == template.render(values) + "<|im_end|>"
    assert answer == ex["input_ids"][n_prompt:].tolist()
    prompt = prepare_prompt(processor, audio, h.INSTRUCTIONS, request)
    assert ex["input_ids"][:n_prompt].tolist() == prompt.ids
    assert torch.equal(ex["input_features"], prompt.input_features)
    text = tok.decode(ex["input_ids"][:n_prompt].tolist())
    # fixed instructions first (shared prefix), then audio, then the request, then the assistant turn
    assert text.index(h.INSTRUCTIONS) < text.index("<|audio_bos|>") < text.index(request)
    assert text.endswith("<|im_start|>assistant\n")
    assert text.count("<|AUDIO|>") == 50  # 2 s of audio -> 50 audio tokens


def test_collated_batch_trains(processor, random_model, h):
    from peft import get_peft_model

    from pronunciation.adapters import new_lora_config

    rng = np.random.default_rng(4)
    examples = []
    for words in (["MARK"], ["GOING", "TO", "SEE"]):
        template = h.full_template(words)
        examples.append(
            encode_training_example(
                processor, h.INSTRUCTIONS, f"Reference text: {' '.join(words)}.", h.make_audio(rng), template, _values(template, rng)
            )
        )
    batch = collate_training_examples(examples, processor.tokenizer.pad_token_id)
    assert batch["input_ids"].shape == batch["labels"].shape and batch["input_features"].shape[0] == 2
    model = get_peft_model(random_model(0), new_lora_config())
    model.train()
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None for g in grads)
