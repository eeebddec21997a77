"""A `Template` compiled to tokens: literal pieces as token ids, each slot's allowed values as a
token trie with its stop token (see `pronunciation.decoding` for how the decoder walks it)."""

from __future__ import annotations

from dataclasses import dataclass

from pronunciation.prompt_inputs import END_OF_TURN
from pronunciation.template import Literal, Slot, Template


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
