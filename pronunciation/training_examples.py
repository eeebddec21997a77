"""Training pairs in exactly the layout decoding forces: the same prompt, the answer tokenized
the way the decoder feeds it, loss on the answer tokens only."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pronunciation.compiled_template import compile_template
from pronunciation.prompt_inputs import prepare_prompt
from pronunciation.template import Template

IGNORE_INDEX = -100  # label of prompt and padding tokens: the loss counts answer tokens only


def encode_training_example(processor, instructions: str, request: str, audio, template: Template, values: dict[str, int]) -> dict[str, torch.Tensor]:
    """One supervised example in the exact layout and tokenization that inference uses.

    Returns unbatched tensors: input_ids (L,), labels (L,) with -100 on the prompt,
    attention_mask (L,), input_features (n_mels, 3000), feature_attention_mask (3000,).
    The answer is the template's literal pieces (each run tokenized on its own) and the value tokens
    (tokens of str(value)), then <|im_end|> - the tokens constrained decoding forces and chooses.
    """
    prompt = prepare_prompt(processor, audio, instructions, request)
    compiled = compile_template(processor.tokenizer, template)
    answer = compiled.answer_ids(values)
    prompt_ids = prompt.ids
    input_ids = torch.tensor([*prompt_ids, *answer], dtype=torch.long)
    labels = torch.tensor([IGNORE_INDEX] * len(prompt_ids) + answer, dtype=torch.long)
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": torch.ones_like(input_ids),
        "input_features": prompt.input_features,
        "feature_attention_mask": prompt.feature_attention_mask,
    }


def collate_training_examples(examples: Sequence[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad `encode_training_example` outputs into a batch (labels padded with -100)."""
    width = max(int(e["input_ids"].shape[0]) for e in examples)
    batch = len(examples)
    ids = torch.full((batch, width), pad_id, dtype=torch.long)
    labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = int(e["input_ids"].shape[0])
        ids[i, :n] = e["input_ids"]
        labels[i, :n] = e["labels"]
        mask[i, :n] = e["attention_mask"]
    return {
        "input_ids": ids,
        "labels": labels,
        "attention_mask": mask,
        "input_features": torch.stack([e["input_features"] for e in examples]),
        "feature_attention_mask": torch.stack([e["feature_attention_mask"] for e in examples]),
    }
