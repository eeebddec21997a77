"""Constrained decoding on tiny random Qwen2-Audio models: invariants, cross-checks, batching, cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pronunciation.compiled_template import compile_template
from pronunciation.decoding import ConstrainedDecoder
from pronunciation.prompt_inputs import prepare_prompt
from pronunciation.template import SCORE_VALUES, STRESS_VALUES, Literal, Slot, Template
from pronunciation.training_examples import encode_training_example

BRANCHING = tuple(range(21))  # inner trie nodes "1" and "2": needs one extra forward per slot


# ---------------------------------------------------------------------------------------------
# An independent, deliberately naive reference: no KV cache, no speculation, no batching.
# Every probability comes from a full forward over prompt + answer so far.
# ---------------------------------------------------------------------------------------------


def _full_logprobs(model, prompt, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            input_features=prompt.input_features[None],
            feature_attention_mask=prompt.feature_attention_mask[None],
        )
    return torch.log_softmax(out.logits[0, -1].double(), dim=-1)


def reference_decode(model, processor, audio, instructions, request, template):
    tok = processor.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    prompt = prepare_prompt(processor, audio, instructions, request)
    ids = list(prompt.ids)
    segs = []  # adjacent literals joined, empty ones dropped
    for s in template.segments:
        if isinstance(s, Literal):
            if s.text and segs and isinstance(segs[-1], Literal):
                segs[-1] = Literal(segs[-1].text + s.text)
            elif s.text:
                segs.append(s)
        else:
            segs.append(s)
    out = {}
    for k, seg in enumerate(segs):
        if isinstance(seg, Literal):
            ids += tok(seg.text, add_special_tokens=False)["input_ids"]
            continue
        nxt = next((s for s in segs[k + 1 :]), None)
        stop = tok(nxt.text, add_special_tokens=False)["input_ids"][0] if nxt is not None else end
        vt = [tuple(tok(str(v), add_special_tokens=False)["input_ids"]) for v in seg.values]
        memo = {}

        def lp_at(node):
            if node not in memo:
                memo[node] = _full_logprobs(model, prompt, ids + list(node))
            return memo[node]

        def step(node, token):
            allowed = {t[len(node)] for t in vt if len(t) > len(node) and t[: len(node)] == node}
            if node in vt:
                allowed.add(stop)
            if len(allowed) == 1:
                return 0.0
            allowed = sorted(allowed)
            lps = lp_at(node)[allowed]
            return float(lps[allowed.index(token)] - torch.logsumexp(lps, 0))

        logp = []
        for t in vt:
            total = sum(step(t[:d], t[d]) for d in range(len(t))) + step(t, stop)
            logp.append(total)
        p = np.exp(np.array(logp) - max(logp))
        p /= p.sum()
        best = int(np.argmax(p))
        out[seg.name] = (seg.values[best], float(np.dot(seg.values, p)), p)
        ids += list(vt[best])
    return out


def _check_invariants(template: Template, result):
    assert set(result.values) == {s.name for s in template.slots}
    for slot in template.slots:
        value, expected = result.values[slot.name]
        assert value in slot.values
        assert min(slot.values) - 1e-9 <= expected <= max(slot.values) + 1e-9
        probs = result.probabilities[slot.name]
        assert set(probs) == set(slot.values)
        assert abs(sum(probs.values()) - 1.0) < 1e-9
        assert probs[value] == max(probs.values())
    assert result.text == template.render({k: v for k, (v, _) in result.values.items()})


@pytest.mark.parametrize("seed", range(12))
def test_random_models_match_reference_decoder(seed, random_model, processor, h):
    """Values in the allowed sets, text == render(argmax), and the KV-cached batched decoder agrees
    with the naive full-forward reference on every slot (argmax and expected value)."""
    rng = np.random.default_rng(100 + seed)
    model = random_model(seed)
    dec = ConstrainedDecoder(model, processor)
    value_sets = h.VALUE_SETS + ([BRANCHING] if seed % 2 else [])
    cases = []
    for _ in range(3):
        cases.append((h.make_audio(rng), h.random_request(rng), h.random_template(rng, value_sets=value_sets, max_slots=6)))
    prompts = [prepare_prompt(processor, a, h.INSTRUCTIONS, r) for a, r, _ in cases]
    results = dec.decode(prompts, [t for _, _, t in cases])
    for (audio, request, template), res in zip(cases, results):
        _check_invariants(template, res)
        ref = reference_decode(model, processor, audio, h.INSTRUCTIONS, request, template)
        for name, (value, expected) in res.values.items():
            assert value == ref[name][0], (name, res.probabilities[name], ref[name][2])
            assert expected == pytest.approx(ref[name][1], abs=1e-4)


def test_full_template_invariants_many_seeds(random_model, processor, h):
    rng = np.random.default_rng(7)
    template = h.full_template(["MARK", "IS", "GOING", "ELEPHANT"])
    for seed in range(10, 16):
        dec = ConstrainedDecoder(random_model(seed), processor)
        prompts = [prepare_prompt(processor, h.make_audio(rng), h.INSTRUCTIONS, h.random_request(rng)) for _ in range(2)]
        for res in dec.decode(prompts, [template, template]):
            _check_invariants(template, res)
            assert res.text.startswith("Sentence Scores: ") and "\nWord Scores: MARK/" in res.text
            assert "\nPhone Scores: M/" in res.text and " - IH0/" in res.text


class _LogitBias:
    def __init__(self, model, bias: dict[int, float]):
        self.bias = bias
        self.handle = model.lm_head.register_forward_hook(self)

    def __call__(self, module, args, output):
        output = output.clone()
        for token, b in self.bias.items():
            output[..., token] += b
        return output


def test_one_hot_distribution_gives_expected_equal_to_argmax(random_model, processor, h):
    tok = processor.tokenizer
    t = {d: tok.convert_tokens_to_ids(str(d)) for d in range(10)}
    model = random_model(3)
    dec = ConstrainedDecoder(model, processor)
    rng = np.random.default_rng(0)
    template = Template(
        (
            Literal("Scores: "),
            Slot("a", SCORE_VALUES),
            Literal(" "),
            Slot("b", STRESS_VALUES),
            Literal(" "),
            Slot("c", (0, 1, 2)),
            Literal("/"),
            Slot("d", (3, 7)),
        )
    )
    prompt = prepare_prompt(processor, h.make_audio(rng), h.INSTRUCTIONS, "Reference text: MARK.")

    hook = _LogitBias(model, {t[7]: 1e4})
    try:
        [res] = dec.decode([prompt], [template])
    finally:
        hook.handle.remove()
    assert res.values["a"] == (7, 7.0)
    assert res.values["d"] == (7, 7.0)
    assert res.text.startswith("Scores: 7 ")

    # multi-token value: "1" wins at the root, then "0" beats the following literal -> 10
    dec.clear_prefix_cache(all_keys=True)
    hook = _LogitBias(model, {t[1]: 2e4, t[0]: 1e4})
    try:
        [res] = dec.decode([prompt], [template])
    finally:
        hook.handle.remove()
    assert res.values["a"] == (10, 10.0)
    assert res.values["b"] == (10, 10.0)
    assert res.values["c"] == (1, 1.0)
    assert res.text == "Scores: 10 10 1/" + str(res.values["d"][0])


def test_single_token_argmax_matches_teacher_forcing(random_model, processor, h):
    """One plain full forward over prompt + rendered answer (built by encode_training_example)
    gives, at each value position, the same restricted argmax and expected value as decoding."""
    rng = np.random.default_rng(11)
    model = random_model(21)
    dec = ConstrainedDecoder(model, processor)
    tok = processor.tokenizer
    sets = [tuple(range(10)), tuple(range(6)), (3, 7), (0, 1, 2)]
    full = h.full_template(["MARK", "IS"])
    full = Template(tuple(Slot(s.name, tuple(range(10))) if isinstance(s, Slot) else s for s in full.segments))
    for k in range(4):
        template = full if k == 0 else h.random_template(rng, value_sets=sets, max_slots=8)
        audio, request = h.make_audio(rng), h.random_request(rng)
        [res] = dec.decode([prepare_prompt(processor, audio, h.INSTRUCTIONS, request)], [template])
        argmax = {k: v for k, (v, _) in res.values.items()}
        ex = encode_training_example(processor, h.INSTRUCTIONS, request, audio, template, argmax)
        # the forced tokens are the plain tokenization of the rendered text (Qwen2 pre-tokenizer)
        answer = ex["input_ids"][ex["labels"] != -100].tolist()
        assert answer[:-1] == tok(res.text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(
                input_ids=ex["input_ids"][None],
                attention_mask=ex["attention_mask"][None],
                input_features=ex["input_features"][None],
                feature_attention_mask=ex["feature_attention_mask"][None],
            ).logits[0]
        n_prompt = int((ex["labels"] == -100).sum())
        compiled = compile_template(tok, template)
        pos = n_prompt
        for lit, cslot in zip(compiled.before, compiled.slots):
            pos += len(lit)
            allowed = [v[0] for v in cslot.value_tokens]
            restricted = logits[pos - 1, allowed].double()
            assert cslot.values[int(torch.argmax(restricted))] == res.values[cslot.name][0]
            p = torch.softmax(restricted, 0).numpy()
            assert float(np.dot(cslot.values, p)) == pytest.approx(res.values[cslot.name][1], abs=1e-4)
            pos += 1


def test_batch_equals_one_at_a_time(random_model, processor, h):
    rng = np.random.default_rng(5)
    model = random_model(4)
    templates = [
        h.full_template(["MARK", "IS"]),
        h.full_template(["ELEPHANT"]),
        h.random_template(rng, value_sets=h.VALUE_SETS + [BRANCHING], max_slots=3),
        Template((Literal("Sentence Scores: "), Slot("acc"), Literal(" "), Slot("tot"))),
    ]
    seconds = [0.4, 3.7, 1.5, 2.2]
    prompts = [
        prepare_prompt(processor, h.make_audio(rng, s), h.INSTRUCTIONS, h.random_request(rng)) for s in seconds
    ]
    dec = ConstrainedDecoder(model, processor)
    batched = dec.decode(prompts, templates)
    singles = [dec.decode([p], [t])[0] for p, t in zip(prompts, templates)]
    no_prefix_cache = ConstrainedDecoder(model, processor, use_prefix_cache=False).decode(prompts, templates)
    for b, s, n in zip(batched, singles, no_prefix_cache):
        for other in (s, n):
            assert other.text == b.text
            assert {k: v for k, (v, _) in other.values.items()} == {k: v for k, (v, _) in b.values.items()}
            for k in b.values:
                assert other.values[k][1] == pytest.approx(b.values[k][1], abs=1e-4)

    # different instructions in one batch: no shared prefix, same answers item by item
    other_prompt = prepare_prompt(processor, h.make_audio(rng, 1.0), "Score it.", h.random_request(rng))
    mixed = dec.decode([prompts[0], other_prompt], [templates[0], templates[3]])
    alone = dec.decode([other_prompt], [templates[3]])[0]
    assert mixed[0].text == batched[0].text and mixed[1].text == alone.text
    for k in alone.values:
        assert mixed[1].values[k][1] == pytest.approx(alone.values[k][1], abs=1e-4)


def test_one_forward_per_slot(random_model, processor, h):
    model = random_model(8)
    calls = []
    model.model.language_model.register_forward_hook(lambda *a: calls.append(1))
    dec = ConstrainedDecoder(model, processor)
    rng = np.random.default_rng(1)
    template = h.full_template(["MARK", "IS", "GOING"])  # 5 + 3*3 + 10 slots, values 0..10 and 5/10
    n_slots = len(template.slots)
    prompts = [prepare_prompt(processor, h.make_audio(rng), h.INSTRUCTIONS, h.random_request(rng)) for _ in range(4)]
    dec.decode(prompts[:1], [template])
    assert len(calls) == n_slots + 1  # + the shared prefix, once
    calls.clear()
    res = dec.decode(prompts, [template, template, h.full_template(["TO"]), template])
    assert len(calls) == n_slots  # prefix cached; the shorter template feeds padding
    assert res[0].forwards == n_slots
    calls.clear()
    dec.decode(prompts[:1], [Template((Literal("A: "), Slot("x", BRANCHING), Literal(" B: "), Slot("y")))])
    assert len(calls) == 2 + 1  # two slots, plus one extra speculative path for 0..20


def test_template_and_audio_validation(processor, random_model, h):
    tok = processor.tokenizer
    with pytest.raises(ValueError, match="adjacent"):
        compile_template(tok, Template((Slot("a"), Slot("b"))))
    with pytest.raises(ValueError, match="ambiguous"):
        compile_template(tok, Template((Slot("a"), Literal("0 apples"))))
    with pytest.raises(ValueError, match="no allowed values"):
        compile_template(tok, Template((Literal("x"), Slot("a", ()))))
    with pytest.raises(ValueError, match="unique"):
        compile_template(tok, Template((Slot("a"), Literal(" "), Slot("a"))))
    # adjacent literals are joined before tokenizing: natural tokens, as in the rendered text
    joined = compile_template(tok, Template((Literal("Word Scores:"), Literal(" "), Literal("MARK/"), Slot("a"), Literal("/"))))
    assert joined.before[0] == tuple(tok("Word Scores: MARK/", add_special_tokens=False)["input_ids"])
    assert joined.answer_ids({"a": 10}) == tok("Word Scores: MARK/10/<|im_end|>", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="30 s"):
        prepare_prompt(processor, np.zeros(16000 * 31, np.float32), "i", "r")
    # a template without slots needs no forward at all
    dec = ConstrainedDecoder(random_model(0), processor)
    prompt = prepare_prompt(processor, np.zeros(16000, np.float32), "i", "r")
    [res] = dec.decode([prompt], [Template((Literal("nothing to score"),))])
    assert res.text == "nothing to score" and res.values == {} and res.forwards == 0
