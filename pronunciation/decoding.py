"""Template-constrained decoding for Qwen2-Audio: force the known text, choose only the scores.

The reference words and phones are known before the model runs, so the whole answer is a
`Template`: literal text pieces and score slots. Decoding here

* forces every literal: the literal text between two slots is tokenized on its own (no special
  tokens) and fed as is;
* lets the model choose, at each `Slot`, only one of the slot's allowed values; a value's tokens are
  the tokenization of `str(value)`;
* reads the probability of every allowed value, so each slot yields the argmax value and the
  expected value sum(v * p(v)) with p renormalised over the allowed values;
* costs ONE language-model forward per slot (plus one per distinct shared prompt prefix, cached):
  the forced tokens of a segment are fed in a single forward on top of the KV cache and the logits
  are read at the last position only.

Multi-token values ("10" is "1" "0": Qwen2's pre-tokenizer splits digits one by one). The allowed
values of a slot form a token trie. Their probabilities are the products of the next-token
probabilities along the trie, each step renormalised over the tokens allowed at that point: at the
root the first tokens of the values; after "1" the continuation "0" (value 10) or "stop" (value 1),
where "stop" is the first token of the literal that follows the slot (or `<|im_end|>` after the last
slot). So for scores 0..10:

    P(1)  = P_root("1") * P("<next literal token>" | "1") / (P("0" | "1") + P("<next literal token>" | "1"))
    P(10) = P_root("1") * P("0" | "1")                  / (P("0" | "1") + P("<next literal token>" | "1"))

with P_root renormalised over "0".."9". This is exactly the distribution a token-by-token
constrained sampler would follow, and it sums to 1 over the allowed values. The argmax value is
the argmax of this value distribution.

To keep one forward per slot, the inner trie nodes are fed SPECULATIVELY in the same forward as
the literal: the chunk is `literal tokens + "1"`; causal attention leaves the logits at the last
literal token unchanged, and the logits at "1" give the distribution after "1". If the chosen value
does not start with "1", the speculative column is dropped: its attention-mask entry is set to 0
(per item, so a batch stays rectangular), and when the trailing cache columns are dead for the
whole batch they are removed with `DynamicCache.crop`. Position ids are explicit, so a dead column
leaves no gap in positions. Value sets whose inner trie nodes do not lie on one root path (e.g.
0..100) need one extra forward per extra path; scores 0..10 and stress 5/10 need none.

Batching: each step feeds, per item, a chunk of different length; chunks are LEFT-padded to the
longest one with attention-mask zeros and real position ids for the real tokens, so every item
keeps its own positions and never attends to padding. The prompt itself is the first chunk (so it
is left-padded too). Items with fewer slots feed only padding once they are done. Results equal
one-at-a-time decoding up to float rounding.

Prefix caching: the prompt is ChatML with the fixed instructions FIRST
(system, then `user` = instructions, audio, request), so requests share one long prefix. Its KV
cache is computed once per (adapter, instructions) and copied into each batch; padding then sits
between the prefix and the per-request part, which explicit positions make harmless.

Training uses `encode_training_example`, which builds the same prompt and tokenizes the answer the
same way as decoding forces it, so training and inference agree token for token.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from pronunciation.template import Literal, Slot, Template

SYSTEM_PROMPT = "You are a helpful assistant."
AUDIO_PLACEHOLDER = "<|audio_bos|><|AUDIO|><|audio_eos|>"
END_OF_TURN = "<|im_end|>"
SAMPLE_RATE = 16_000
MAX_AUDIO_SECONDS = 30.0  # the encoder takes exactly 3,000 mel frames (30 s)
IGNORE_INDEX = -100


# --------------------------------------------------------------------------------------------
# Prompt
# --------------------------------------------------------------------------------------------


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


def _stack_features(prompts: Sequence[PreparedPrompt]) -> tuple[torch.Tensor, torch.Tensor]:
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


# --------------------------------------------------------------------------------------------
# Templates compiled to tokens
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledSlot:
    name: str
    values: tuple[int, ...]
    value_tokens: tuple[tuple[int, ...], ...]  # tokens of str(v) for each v in `values`
    stop_token: int  # first token after the slot: next literal's first token, or <|im_end|>
    # Trie nodes (token prefixes) where the model has a choice, with the tokens allowed there.
    # Only nodes with more than one allowed token; a complete value that could continue allows
    # `stop_token` too.
    choice_nodes: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    # Root paths fed speculatively so every non-root choice node gets its logits; chains[0] rides
    # along with the literal in the slot's forward, each further chain costs one more forward.
    chains: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class CompiledTemplate:
    template: Template
    # literal tokens fed before slot k (after slot k-1's value); len == number of slots
    before: tuple[tuple[int, ...], ...]
    tail: tuple[int, ...]  # literal tokens after the last slot (without <|im_end|>)
    slots: tuple[CompiledSlot, ...]
    end_token: int

    def answer_ids(self, values: dict[str, int]) -> list[int]:
        """Token ids of the rendered answer, exactly as decoding forces them, plus <|im_end|>."""
        ids: list[int] = []
        for lit, slot in zip(self.before, self.slots):
            ids.extend(lit)
            value = values[slot.name]
            if value not in slot.values:
                raise ValueError(f"{slot.name}: {value} is not one of {slot.values}")
            ids.extend(slot.value_tokens[slot.values.index(value)])
        ids.extend(self.tail)
        ids.append(self.end_token)
        return ids


def _encode(tokenizer, text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"])


def _compile_slot(tokenizer, slot: Slot, stop_token: int, memo: dict[int, tuple[int, ...]] | None = None) -> CompiledSlot:
    if not slot.values:
        raise ValueError(f"slot {slot.name!r} has no allowed values")
    if len(set(slot.values)) != len(slot.values):
        raise ValueError(f"slot {slot.name!r} repeats a value: {slot.values}")
    memo = {} if memo is None else memo
    for v in slot.values:
        if v not in memo:
            memo[v] = _encode(tokenizer, str(v))
    value_tokens = tuple(memo[v] for v in slot.values)
    if any(len(t) == 0 for t in value_tokens):
        raise ValueError(f"slot {slot.name!r}: a value encodes to no token")
    complete = set(value_tokens)
    children: dict[tuple[int, ...], set[int]] = {}
    for toks in value_tokens:
        for d in range(len(toks)):
            children.setdefault(toks[:d], set()).add(toks[d])
    nodes = []
    for node in sorted(children, key=lambda n: (len(n), n)):
        allowed = sorted(children[node])
        if node in complete:
            if stop_token in children[node]:
                raise ValueError(
                    f"slot {slot.name!r}: the text after the slot starts with a token that could continue a "
                    "value, so the value would be ambiguous (put a separator after the slot)"
                )
            allowed.append(stop_token)
        if len(allowed) > 1:  # a node with a single allowed token is forced: no logits needed
            nodes.append((node, tuple(allowed)))
    # Cover the non-root choice nodes with root paths, deepest first.
    uncovered = {n for n, _ in nodes if n}
    chains: list[tuple[int, ...]] = []
    while uncovered:
        deepest = max(uncovered, key=lambda n: (len(n), n))
        chains.append(deepest)
        uncovered -= {deepest[:d] for d in range(1, len(deepest) + 1)}
    return CompiledSlot(
        name=slot.name,
        values=tuple(slot.values),
        value_tokens=value_tokens,
        stop_token=stop_token,
        choice_nodes=tuple(nodes),
        chains=tuple(chains) if chains else ((),),
    )


def compile_template(tokenizer, template: Template, end_token: int | None = None) -> CompiledTemplate:
    """Tokenize a template the way decoding forces it.

    The literal text between two slots (one Literal, or several in a row, joined) is tokenized on
    its own, without special tokens; a value is the tokenization of str(value). Joining adjacent
    Literals keeps the tokens the model would naturally see (" " + "MARK/" is " MARK" "/", not
    " " "MARK" "/"); with Qwen2's pre-tokenizer, which splits every digit off, the result equals the
    tokenization of the whole rendered answer for ordinary templates.
    """
    if end_token is None:
        end_token = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    names = [s.name for s in template.slots]
    if len(set(names)) != len(names):
        raise ValueError("slot names must be unique within a template")
    runs: list[str | Slot] = []
    for seg in template.segments:
        if isinstance(seg, Literal):
            if not seg.text:
                continue
            if runs and isinstance(runs[-1], str):
                runs[-1] += seg.text
            else:
                runs.append(seg.text)
        elif isinstance(seg, Slot):
            if runs and isinstance(runs[-1], Slot):
                raise ValueError(
                    f"slots {runs[-1].name!r} and {seg.name!r} are adjacent; a literal separator is needed"
                )
            runs.append(seg)
        else:  # pragma: no cover
            raise TypeError(f"unknown template segment {seg!r}")
    pieces: list[tuple[int, ...] | Slot] = [r if isinstance(r, Slot) else _encode(tokenizer, r) for r in runs]
    before: list[tuple[int, ...]] = []
    slots: list[CompiledSlot] = []
    pending: tuple[int, ...] = ()
    memo: dict[int, tuple[int, ...]] = {}  # value -> tokens of str(value)
    for i, piece in enumerate(pieces):
        if isinstance(piece, Slot):
            nxt = pieces[i + 1] if i + 1 < len(pieces) else None
            stop = nxt[0] if nxt is not None else end_token
            before.append(pending)
            slots.append(_compile_slot(tokenizer, piece, stop, memo))
            pending = ()
        else:
            pending = piece
    return CompiledTemplate(template=template, before=tuple(before), tail=pending, slots=tuple(slots), end_token=end_token)


# --------------------------------------------------------------------------------------------
# Constrained decoding
# --------------------------------------------------------------------------------------------


@dataclass
class DecodeResult:
    values: dict[str, tuple[int, float]]  # slot name -> (argmax value, expected value)
    probabilities: dict[str, dict[int, float]]  # slot name -> value -> probability
    text: str  # template.render(argmax values)
    forwards: int  # language-model forward calls of the batch this item was decoded in


@dataclass
class _ItemState:
    compiled: CompiledTemplate
    pending: list[int]
    next_pos: int
    slot: int = 0
    argmax: dict[str, int] = field(default_factory=dict)
    values: dict[str, tuple[int, float]] = field(default_factory=dict)
    probs: dict[str, dict[int, float]] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.slot >= len(self.compiled.slots)


def _core_model(model):
    """The Qwen2AudioForConditionalGeneration inside a (possibly peft-wrapped) model."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _value_distribution(cslot: CompiledSlot, restricted: dict[tuple[int, ...], dict[int, float]]) -> np.ndarray:
    """P(value) over cslot.values from each choice node's log-probs, already renormalised over the
    tokens allowed at that node (`ConstrainedDecoder._collect`)."""
    logp = np.empty(len(cslot.values), dtype=np.float64)
    for i, toks in enumerate(cslot.value_tokens):
        total = 0.0
        for d in range(len(toks)):
            node = restricted.get(toks[:d])
            if node is not None:  # absent: the only token allowed there (probability 1)
                total += node[toks[d]]
        node = restricted.get(toks)
        if node is not None:  # the value could continue: it must stop here
            total += node[cslot.stop_token]
        logp[i] = total
    p = np.exp(logp - logp.max())
    return p / p.sum()


class ConstrainedDecoder:
    """Template-constrained, batched, KV-cached decoding over a Qwen2AudioForConditionalGeneration.

    `model` may be the plain model or a peft model around it; whatever adapter state it is in at
    call time is what decodes. `cache_key` passed to `decode` must identify that state (e.g. the
    active adapter version): it keys the shared-prefix KV cache.
    """

    def __init__(self, model, processor, *, prefix_cache_size: int = 8, use_prefix_cache: bool = True):
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.end_token = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        self.use_prefix_cache = use_prefix_cache
        self.prefix_cache_size = prefix_cache_size
        self._prefix_cache: OrderedDict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self._compiled: OrderedDict[Template, CompiledTemplate] = OrderedDict()
        self._lock = threading.Lock()

    # -- helpers -------------------------------------------------------------------------------

    def compile(self, template: Template) -> CompiledTemplate:
        with self._lock:
            hit = self._compiled.get(template)
            if hit is not None:
                self._compiled.move_to_end(template)
                return hit
        compiled = compile_template(self.tokenizer, template, self.end_token)
        with self._lock:
            self._compiled[template] = compiled
            while len(self._compiled) > 256:
                self._compiled.popitem(last=False)
        return compiled

    def clear_prefix_cache(self, cache_key=None, *, all_keys: bool = False) -> None:
        with self._lock:
            if all_keys:
                self._prefix_cache.clear()
            else:
                for k in [k for k in self._prefix_cache if k[0] == cache_key]:
                    del self._prefix_cache[k]

    @property
    def _core(self):
        return _core_model(self.model)

    @property
    def device(self) -> torch.device:
        return next(self._core.parameters()).device

    def _lm_forward(self, cache, input_ids, attention_mask, position_ids, **audio):
        core = self._core
        feats = audio.get("input_features")
        if feats is not None and feats.shape[-1] != FULL_WINDOW_FRAMES:  # a trimmed window
            embeds = encode_audio_window(core.model, input_ids, feats, audio["feature_attention_mask"])
            out = core.model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                             cache=cache, use_cache=True)
            return out.last_hidden_state
        out = core.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
            **audio,
        )
        return out.last_hidden_state

    def _new_cache(self, layers: list[tuple[torch.Tensor, torch.Tensor]] | None, batch: int):
        from transformers import DynamicCache

        text_config = self._core.config.get_text_config(decoder=True)
        if not layers:
            return DynamicCache(config=text_config)
        return DynamicCache(
            ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in layers],
            config=text_config,
        )

    def _prefix_kv(self, prefix_ids: tuple[int, ...], cache_key) -> tuple[list, int]:
        """KV of the shared prefix (batch 1), computed once per (cache_key, prefix). Returns (layers, forwards)."""
        key = (cache_key, prefix_ids)
        with self._lock:
            hit = self._prefix_cache.get(key)
            if hit is not None:
                self._prefix_cache.move_to_end(key)
                return hit, 0
        cache = self._new_cache(None, 1)
        ids = torch.tensor([prefix_ids], dtype=torch.long, device=self.device)
        mask = torch.ones_like(ids)
        pos = torch.arange(len(prefix_ids), device=self.device)[None, :]
        self._lm_forward(cache, ids, mask, pos)
        layers = [(layer.keys.detach(), layer.values.detach()) for layer in cache.layers]
        with self._lock:
            self._prefix_cache[key] = layers
            while len(self._prefix_cache) > self.prefix_cache_size:
                self._prefix_cache.popitem(last=False)
        return layers, 1

    # -- decoding ------------------------------------------------------------------------------

    @torch.inference_mode()
    def decode(
        self, prompts: Sequence[PreparedPrompt], templates: Sequence[Template], *, cache_key=None
    ) -> list[DecodeResult]:
        if len(prompts) != len(templates):
            raise ValueError("one template per prompt")
        compiled = [self.compile(t) for t in templates]
        results: list[DecodeResult | None] = [None] * len(prompts)
        todo = []
        for i, c in enumerate(compiled):
            if c.slots:
                todo.append(i)
            else:  # nothing to choose: no forward needed
                results[i] = DecodeResult({}, {}, c.template.render({}), 0)
        if todo:
            for i, r in zip(todo, self._decode_batch([prompts[i] for i in todo], [compiled[i] for i in todo], cache_key)):
                results[i] = r
        return results  # type: ignore[return-value]

    def _decode_batch(self, prompts, compiled, cache_key) -> list[DecodeResult]:
        device = self.device
        batch = len(prompts)
        forwards = 0

        shared = self.use_prefix_cache and all(p.prefix_ids == prompts[0].prefix_ids for p in prompts)
        if shared and prompts[0].prefix_ids:
            layers, n = self._prefix_kv(prompts[0].prefix_ids, cache_key)
            forwards += n
            cache = self._new_cache(layers, batch)
            plen = len(prompts[0].prefix_ids)
            attn = torch.ones(batch, plen, dtype=torch.long, device=device)
            states = [_ItemState(c, [*p.suffix_ids, *c.before[0]], plen) for p, c in zip(prompts, compiled)]
        else:
            cache = self._new_cache(None, batch)
            attn = torch.zeros(batch, 0, dtype=torch.long, device=device)
            states = [_ItemState(c, [*p.ids, *c.before[0]], 0) for p, c in zip(prompts, compiled)]

        feats, fmask = _stack_features(prompts)
        audio = {"input_features": feats.to(device), "feature_attention_mask": fmask.to(device)}

        every = states  # results come from these, in input order; `states` shrinks as items finish
        while states:
            # 1. One forward: per item, pending forced tokens + first speculative chain.
            seqs: list[list[int]] = []
            starts: list[list[int]] = []  # position ids
            slot_start: list[int] = []
            for s in states:
                cslot = s.compiled.slots[s.slot]
                chain = list(cslot.chains[0])
                toks = s.pending + chain
                seqs.append(toks)
                starts.append(list(range(s.next_pos, s.next_pos + len(toks))))
                slot_start.append(s.next_pos + len(s.pending))
            attn, cols, hidden = self._feed(cache, attn, seqs, starts, audio)
            audio = {}
            forwards += 1

            node_lp: list[dict[tuple[int, ...], dict[int, float]]] = [{} for _ in states]
            chain_cols: list[list[list[int]]] = [[] for _ in states]
            picks, owners = [], []  # (row, column) of `hidden` to read, and (item, trie node) it gives
            offset = attn.shape[1] - hidden.shape[1]
            for i, s in enumerate(states):
                chain = s.compiled.slots[s.slot].chains[0]
                npend = len(s.pending)
                c = cols[i]
                picks.append((i, c[npend - 1]))
                owners.append((i, ()))
                for d in range(len(chain)):
                    picks.append((i, c[npend + d]))
                    owners.append((i, chain[: d + 1]))
                chain_cols[i].append([offset + c[npend + d] for d in range(len(chain))])
            self._collect(hidden, picks, owners, states, node_lp)
            for i, cc in enumerate(chain_cols):
                if cc and cc[-1]:
                    attn[i, cc[-1]] = 0  # speculative: dead unless the chosen value revives it

            # 2. Extra speculative chains (only value sets whose inner nodes branch).
            max_chains = max(len(s.compiled.slots[s.slot].chains) for s in states)
            for j in range(1, max_chains):
                seqs, starts, users = [], [], []
                for i, s in enumerate(states):
                    chains = s.compiled.slots[s.slot].chains
                    if j < len(chains):
                        seqs.append(list(chains[j]))
                        starts.append(list(range(slot_start[i], slot_start[i] + len(chains[j]))))
                        users.append(i)
                    else:
                        seqs.append([])
                        starts.append([])
                attn, cols, hidden = self._feed(cache, attn, seqs, starts, {})
                forwards += 1
                picks, owners = [], []
                offset = attn.shape[1] - hidden.shape[1]
                for i in users:
                    chain = states[i].compiled.slots[states[i].slot].chains[j]
                    for d in range(len(chain)):
                        picks.append((i, cols[i][d]))
                        owners.append((i, chain[: d + 1]))
                    chain_cols[i].append([offset + cols[i][d] for d in range(len(chain))])
                self._collect(hidden, picks, owners, states, node_lp)
                for i in users:
                    attn[i, chain_cols[i][-1]] = 0

            # 3. Choose values; revive the speculative columns on the chosen value's path.
            revive_rows: list[int] = []
            revive_cols: list[int] = []
            for i, s in enumerate(states):
                cslot = s.compiled.slots[s.slot]
                p = _value_distribution(cslot, node_lp[i])
                k = int(np.argmax(p))
                value = cslot.values[k]
                expected = float(np.dot(np.asarray(cslot.values, dtype=np.float64), p))
                s.argmax[cslot.name] = value
                s.values[cslot.name] = (value, expected)
                s.probs[cslot.name] = {v: float(pv) for v, pv in zip(cslot.values, p)}
                toks = cslot.value_tokens[k]
                best_j, best_m = 0, 0
                for j, chain in enumerate(cslot.chains):
                    m = 0
                    while m < min(len(chain), len(toks)) and chain[m] == toks[m]:
                        m += 1
                    if m > best_m:
                        best_j, best_m = j, m
                if best_m:
                    revive = chain_cols[i][best_j][:best_m]
                    revive_rows += [i] * len(revive)
                    revive_cols += revive
                s.slot += 1
                after = s.compiled.before[s.slot] if s.slot < len(s.compiled.slots) else ()
                s.pending = [*toks[best_m:], *after]
                s.next_pos = slot_start[i] + best_m
            if revive_rows:  # one scatter for the whole batch
                attn[torch.tensor(revive_rows, device=device), torch.tensor(revive_cols, device=device)] = 1

            # 4. Finished items leave the batch: their rows of the KV cache and mask are dropped, so
            #    the remaining steps feed and attend only for items that still have slots.
            keep = [i for i, s in enumerate(states) if not s.done]
            if len(keep) < len(states):
                states = [states[i] for i in keep]
                if not states:
                    break
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                attn = attn.index_select(0, index)

            # 5. Drop trailing columns that are dead for the whole batch.
            alive = attn.any(dim=0)
            dead_tail = 0
            while dead_tail < attn.shape[1] and not bool(alive[attn.shape[1] - 1 - dead_tail]):
                dead_tail += 1
            if dead_tail:
                cache.crop(-dead_tail)
                attn = attn[:, : attn.shape[1] - dead_tail]

        return [
            DecodeResult(values=s.values, probabilities=s.probs, text=s.compiled.template.render(s.argmax), forwards=forwards)
            for s in every
        ]

    def _feed(self, cache, attn, seqs, positions, audio):
        """One forward of left-padded chunks. Returns (attn, per-item chunk column lists, hidden)."""
        device = attn.device
        width = max(len(s) for s in seqs)
        batch = len(seqs)
        ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        pos = torch.zeros((batch, width), dtype=torch.long)
        cols = []
        for i, (toks, p) in enumerate(zip(seqs, positions)):
            n = len(toks)
            if n:
                ids[i, width - n :] = torch.tensor(toks, dtype=torch.long)
                mask[i, width - n :] = 1
                pos[i, width - n :] = torch.tensor(p, dtype=torch.long)
            cols.append(list(range(width - n, width)))
        attn = torch.cat([attn, mask.to(device)], dim=1)
        hidden = self._lm_forward(cache, ids.to(device), attn, pos.to(device), **audio)
        return attn, cols, hidden

    def _collect(self, hidden, picks, owners, states, node_lp) -> None:
        """Log-probs at the trie nodes read in this forward, renormalised over each node's allowed
        tokens, for the whole batch at once: one gather of the hidden rows, one lm_head, one gather
        of the allowed tokens' logits and one log-softmax over them (the full-vocabulary normaliser
        cancels in the renormalisation, so it is never computed), then one copy to the host."""
        if not picks:
            return
        allowed_at = [dict(s.compiled.slots[s.slot].choice_nodes) for s in states]
        allowed = [allowed_at[i].get(node, ()) for i, node in owners]
        used = [k for k, a in enumerate(allowed) if a]  # nodes with a single allowed token need no logits
        if not used:
            return
        width = max(len(allowed[k]) for k in used)
        token_idx = torch.zeros((len(used), width), dtype=torch.long)
        valid = torch.zeros((len(used), width), dtype=torch.bool)
        for r, k in enumerate(used):
            token_idx[r, : len(allowed[k])] = torch.tensor(allowed[k], dtype=torch.long)
            valid[r, : len(allowed[k])] = True
        device = hidden.device
        rows = torch.tensor([picks[k][0] for k in used], device=device)
        cols = torch.tensor([picks[k][1] for k in used], device=device)
        logits = self._core.lm_head(hidden[rows, cols]).float()
        chosen = logits.gather(1, token_idx.to(device)).double().masked_fill(~valid.to(device), float("-inf"))
        logp = torch.log_softmax(chosen, dim=1).tolist()
        for r, k in enumerate(used):
            i, node = owners[k]
            node_lp[i][node] = dict(zip(allowed[k], logp[r][: len(allowed[k])]))


# --------------------------------------------------------------------------------------------
# Free generation (baseline for benchmarks) and training examples
# --------------------------------------------------------------------------------------------


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
    core = _core_model(model)
    inputs = batch_prompts(prompts, pad_id, next(core.parameters()).device)
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
    if exact_length:
        kwargs["min_new_tokens"] = max_new_tokens
    out = model.generate(**inputs, **kwargs)
    new = out[:, inputs["input_ids"].shape[1] :]
    return tok.batch_decode(new, skip_special_tokens=True)


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
