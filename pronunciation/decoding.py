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

The pieces: `prompt_inputs` (the prompt and audio window), `compiled_template` (tokens and tries),
this decoder, `training_examples` (training pairs) and `free_generation` (the benchmark baseline).
Training uses `training_examples.encode_training_example`, which builds the same prompt and tokenizes the answer the
same way as decoding forces it, so training and inference agree token for token.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from pronunciation.compiled_template import (
    CompiledSlot,
    CompiledTemplate,
    compile_template,
)
from pronunciation.prompt_inputs import (
    END_OF_TURN,
    FULL_WINDOW_FRAMES,
    PreparedPrompt,
    encode_audio_window,
    stack_features,
)
from pronunciation.template import Template


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


def core_model(model):
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
        return core_model(self.model)

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

        feats, fmask = stack_features(prompts)
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
