"""Free `generate` on the same inputs: the baseline the constrained decoder is benchmarked against."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pronunciation.decoding import core_model
from pronunciation.prompt_inputs import PreparedPrompt


def batch_prompts(prompts: Sequence[PreparedPrompt], pad_id: int, device=None) -> dict[str, torch.Tensor]:
    """Left-pad prompts into model inputs (input_ids, attention_mask, input_features, feature_attention_mask)."""
    width = max(len(p.ids) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        seq = p.ids
        ids[i, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[i, width - len(seq) :] = 1
    out = {
        "input_ids": ids,
        "attention_mask": mask,
        "input_features": torch.stack([p.input_features for p in prompts]),
        "feature_attention_mask": torch.stack([p.feature_attention_mask for p in prompts]),
    }
    return {k: v.to(device) for k, v in out.items()} if device is not None else out


@torch.inference_mode()
def free_generate(
    model,
    processor,
    prompts: Sequence[PreparedPrompt],
    *,
    max_new_tokens: int,
    exact_length: bool = True,
) -> list[str]:
    """Plain greedy `model.generate` on the same prompts (benchmark baseline; output is unconstrained).

    With `exact_length`, end-of-turn is suppressed until `max_new_tokens` tokens are out, so every
    item generates exactly that many tokens (a fair cost comparison with constrained decoding).
    """
    tok = processor.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    core = core_model(model)
    inputs = batch_prompts(prompts, pad_id, next(core.parameters()).device)
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
    if exact_length:
        kwargs["min_new_tokens"] = max_new_tokens
    out = model.generate(**inputs, **kwargs)
    new = out[:, inputs["input_ids"].shape[1] :]
    return tok.batch_decode(new, skip_special_tokens=True)
