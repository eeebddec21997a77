"""Model inputs for one request: the ChatML prompt (fixed instructions first, so requests share a
prefix), the audio features and the encoder window (30 s, or trimmed to the batch's longest clip)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

SYSTEM_PROMPT = "You are a helpful assistant."
AUDIO_PLACEHOLDER = "<|audio_bos|><|AUDIO|><|audio_eos|>"
END_OF_TURN = "<|im_end|>"
SAMPLE_RATE = 16_000
MAX_AUDIO_SECONDS = 30.0  # the encoder takes exactly 3,000 mel frames (30 s)


def build_prompt_texts(instructions: str, request: str) -> tuple[str, str]:
    """The ChatML prompt as (shared prefix, per-request suffix).

    prefix = system turn + start of the user turn + instructions + "\\n"
    suffix = audio placeholder + "\\n" + request + end of user turn + start of the assistant turn

    The split sits right before a special token (`<|audio_bos|>`), where Qwen2's tokenizer always
    splits, so tokenizing the two parts separately gives the same tokens as the whole text.
    """
    prefix = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{instructions}\n"
    suffix = f"{AUDIO_PLACEHOLDER}\n{request}<|im_end|>\n<|im_start|>assistant\n"
    return prefix, suffix


@dataclass(frozen=True, eq=False)
class PreparedPrompt:
    """A tokenized prompt: shared prefix ids, per-request ids (audio expanded) and audio features."""

    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    input_features: torch.Tensor  # (n_mels, 3000)
    feature_attention_mask: torch.Tensor  # (3000,)

    @property
    def ids(self) -> list[int]:
        return [*self.prefix_ids, *self.suffix_ids]


def _check_audio(audio) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {audio.shape}")
    if audio.size == 0:
        raise ValueError("audio is empty")
    if audio.size > MAX_AUDIO_SECONDS * SAMPLE_RATE:
        raise ValueError(
            f"audio is {audio.size / SAMPLE_RATE:.1f} s long; Qwen2-Audio takes at most {MAX_AUDIO_SECONDS:.0f} s "
            "per clip (split longer recordings)"
        )
    if not np.isfinite(audio).all():
        raise ValueError("audio contains NaN or infinite samples")
    return audio


def prepare_prompt(processor, audio, instructions: str, request: str) -> PreparedPrompt:
    """Tokenize the prompt and compute the audio features (16 kHz mono float32 audio)."""
    audio = _check_audio(audio)
    prefix_text, suffix_text = build_prompt_texts(instructions, request)
    prefix_ids = processor.tokenizer(prefix_text, add_special_tokens=False)["input_ids"]
    enc = processor(text=[suffix_text], audio=[audio], sampling_rate=SAMPLE_RATE, return_tensors="pt")
    return PreparedPrompt(
        prefix_ids=tuple(int(t) for t in prefix_ids),
        suffix_ids=tuple(int(t) for t in enc["input_ids"][0].tolist()),
        input_features=enc["input_features"][0],
        feature_attention_mask=enc["feature_attention_mask"][0],
    )


FULL_WINDOW_FRAMES = 3000  # mel frames (10 ms each) in Qwen2-Audio's 30 s encoder window
HOP = 160  # samples per mel frame


def audio_tokens(frames: int) -> int:
    """Audio placeholder tokens for `frames` real mel frames (the processor's formula)."""
    return (((frames - 1) // 2 + 1) - 2) // 2 + 1


def window_frames(n_samples: Sequence[int], trim: bool) -> int:
    """The mel window for clips of these lengths: 3,000 frames (30 s, what Qwen2-Audio's encoder
    was built for), or with `trim` the longest clip's frames + 2, rounded up to whole seconds.

    Why trimming changes nothing but cost: the model masks padded frames out of the encoder's
    attention, and a real frame's convolutions reach at most 2 frames past the clip, so every frame
    the language model sees is computed from the same numbers (float rounding aside) when the window
    ends at least 2 frames after the longest clip. Padding frames are log-mel of silence either way."""
    if not trim:
        return FULL_WINDOW_FRAMES
    longest = max(-(-int(n) // HOP) for n in n_samples)
    return min(FULL_WINDOW_FRAMES, -(-(longest + 2) // 100) * 100)


def prepare_prompts(
    processor, audios: Sequence, instructions: Sequence[str], requests: Sequence[str], *, trim_window: bool = False
) -> list[PreparedPrompt]:
    """`prepare_prompt` for a batch: one tokenizer call per prompt part for the whole batch and, with
    `trim_window`, one feature-extractor call (one batched STFT) over a window of
    `window_frames(..., trim=True)` instead of 30 s (see there); at the full 30 s window the
    features are extracted clip by clip, which costs less CPU there than one batched call. Token
    ids equal `prepare_prompt`'s: the audio placeholder is expanded to the same count of audio tokens
    the processor inserts."""
    if not (len(audios) == len(instructions) == len(requests)):
        raise ValueError("one instructions text and one request per audio")
    if not audios:
        return []
    clips = [_check_audio(a) for a in audios]
    frames = window_frames([c.size for c in clips], trim_window)

    def extract(group: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        fe = processor.feature_extractor(
            group, sampling_rate=SAMPLE_RATE, return_attention_mask=True, padding="max_length",
            max_length=frames * HOP, return_tensors="pt",
        )
        return fe["input_features"], fe["attention_mask"]

    if frames < FULL_WINDOW_FRAMES:  # one STFT for the batch
        features, fmask = extract(clips)
    else:  # measured: at 30 s a batched STFT costs more CPU than one per clip (memory-bound)
        parts = [extract([c]) for c in clips]
        features, fmask = torch.cat([f for f, _ in parts]), torch.cat([m for _, m in parts])
    tok = processor.tokenizer
    audio_token = getattr(processor, "audio_token", "<|AUDIO|>")
    texts = [build_prompt_texts(i, r) for i, r in zip(instructions, requests)]
    n_audio = [audio_tokens(int(m)) for m in fmask.sum(-1).tolist()]
    suffixes = [t[1].replace(audio_token, audio_token * n, 1) for t, n in zip(texts, n_audio)]
    prefix_ids = tok([t[0] for t in texts], add_special_tokens=False)["input_ids"]
    suffix_ids = tok(suffixes)["input_ids"]
    return [
        PreparedPrompt(
            prefix_ids=tuple(int(t) for t in prefix_ids[i]),
            suffix_ids=tuple(int(t) for t in suffix_ids[i]),
            input_features=features[i],
            feature_attention_mask=fmask[i],
        )
        for i in range(len(clips))
    ]


def stack_features(prompts: Sequence[PreparedPrompt]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the prompts' features; prompts prepared with different windows are brought to the
    widest by repeating their last (padding) frame, which is what a wider window holds there."""
    width = max(int(p.input_features.shape[-1]) for p in prompts)
    feats, masks = [], []
    for p in prompts:
        f, m = p.input_features, p.feature_attention_mask
        extra = width - int(f.shape[-1])
        if extra:
            f = torch.cat([f, f[:, -1:].expand(-1, extra)], dim=1)
            m = torch.cat([m, m.new_zeros(extra)])
        feats.append(f)
        masks.append(m)
    return torch.stack(feats), torch.stack(masks)


def encode_audio_window(model, input_ids: torch.Tensor, input_features: torch.Tensor,
                        feature_attention_mask: torch.Tensor) -> torch.Tensor:
    """Input embeddings with the audio merged in, for mel windows SHORTER than 30 s.

    `model` is the Qwen2AudioModel (`core.model`). This is the stock encoder forward and merge
    (transformers' Qwen2AudioModel.forward) with the positional embeddings cut to the window:
    the stock encoder refuses anything but 3,000 frames, although it masks the padded frames out
    of attention. At 3,000 frames it computes what the stock path computes."""
    from transformers.masking_utils import create_bidirectional_mask

    tower = model.audio_tower
    feats = input_features.to(dtype=tower.conv1.weight.dtype, device=tower.conv1.weight.device)
    fmask = feature_attention_mask.to(feats.device)
    feat_lens, out_lens = tower._get_feat_extract_output_lengths(fmask.sum(-1))
    x = torch.nn.functional.gelu(tower.conv1(feats))
    x = torch.nn.functional.gelu(tower.conv2(x)).permute(0, 2, 1)
    steps = x.shape[1]
    x = x + tower.embed_positions.weight[:steps]
    real = (torch.arange(steps, device=x.device)[None, :] < feat_lens[:, None]).long()
    mask = create_bidirectional_mask(config=tower.config, inputs_embeds=x.new_zeros(x.shape[0], steps, 1),
                                     attention_mask=real)
    for layer in tower.layers:
        x = layer(x, mask)
        if isinstance(x, tuple):  # older layer signatures return a tuple
            x = x[0]
    x = tower.avg_pooler(x.permute(0, 2, 1)).permute(0, 2, 1)
    audio = model.multi_modal_projector(tower.layer_norm(x))
    keep = torch.arange(audio.shape[1], device=audio.device)[None, :] < out_lens.to(audio.device)[:, None]
    audio = audio[keep]
    embeds = model.get_input_embeddings()(input_ids)
    slots = (input_ids == model.config.audio_token_id).unsqueeze(-1).to(embeds.device)
    if int(slots.sum()) != audio.shape[0]:
        raise ValueError(f"audio tokens ({int(slots.sum())}) and audio features ({audio.shape[0]}) do not match")
    return embeds.masked_scatter(slots, audio.to(embeds.device, embeds.dtype))
