"""LoRA settings shared by training and serving.

The paper (and DESIGN.md) adapt only the language model: rank 8 on its linear layers (attention
q/k/v/o and the MLP gate/up/down), alpha 16, dropout 0.05. `target_modules="all-linear"` would also
adapt the audio tower and the projector, which vLLM cannot serve for multimodal models, so the
target is a regex on the language model's module names.
"""

from __future__ import annotations

LORA_RANK = 8
LORA_ALPHA = 16
LORA_DROPOUT = 0.05
LORA_TARGET_REGEX = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def new_lora_config(*, rank: int = LORA_RANK, alpha: int = LORA_ALPHA, dropout: float = LORA_DROPOUT, inference_mode: bool = False):
    """The paper's LoRA config (peft `LoraConfig`) for Qwen2-Audio's language model."""
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=LORA_TARGET_REGEX,
        bias="none",
        task_type="CAUSAL_LM",
        inference_mode=inference_mode,
    )
