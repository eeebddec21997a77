"""Forced alignment of the reference phones to the frames: exhaustive Viterbi, no pruning.

The decoding graph is a chain: optional silence, then each word's phones (3-state HMMs with
triphone senones) followed by an optional silence. Optional silence states also accept the
model's noise phone. Without beam pruning the best path exists whenever the audio has at least
3 frames per phone (the HMM's minimum), so this aligner does not fail where pocketsphinx's pruned
search does; the one impossible case (audio shorter than the phones' minimum) is a typed error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pronunciation.errors import PronunciationInputError

NEG = -1e30
STATES = 3


class AlignmentError(PronunciationInputError):
    """The audio is too short to hold the reference's phones (3 frames per phone at least)."""

    def __init__(self, frames: int, phones: int) -> None:
        super().__init__(
            "alignment_failed",
            f"the recording has {frames} frames (10 ms) but the reference's {phones} phones need at least "
            f"{STATES * phones}: the audio is too short for this text",
        )


@dataclass(frozen=True)
class ChainUnit:
    """One HMM in the chain: its 3 senones, transition matrix and whether it may be skipped."""

    senones: tuple[int, int, int]
    tmat: int
    optional: bool


@dataclass(frozen=True)
class Alignment:
    unit_of_frame: np.ndarray  # (T,) chain unit index per frame
    state_of_frame: np.ndarray  # (T,) global state index (unit * 3 + state)
    log_likelihood: float


def viterbi(emissions: np.ndarray, units: list[ChainUnit], transitions: np.ndarray) -> Alignment:
    """Best state path through the chain; `emissions` is (T, 3 * len(units)) log-likelihoods."""
    t_total, n = emissions.shape
    u = len(units)
    required = sum(not x.optional for x in units)
    if t_total < STATES * required:
        raise AlignmentError(t_total, required)
    lt = np.log(np.stack([transitions[x.tmat] for x in units]) + 1e-30)  # (U, 3, 4)
    self_p = np.stack([lt[:, i, i] for i in range(STATES)], 1).reshape(-1)
    next_p = np.stack([lt[:, i, i + 1] for i in range(STATES)], 1).reshape(-1)
    optional = np.array([x.optional for x in units])
    first = np.arange(u) * STATES
    last = first + 2
    # an entry into unit k comes from unit k-1's exit, or from k-2's exit when k-1 is optional
    skip_ok = np.zeros(u, bool)
    skip_ok[2:] = optional[1:-1]

    delta = np.full(n, NEG)
    delta[0] = emissions[0, 0]
    if optional[0] and u > 1:
        delta[3] = emissions[0, 3]
    back = np.zeros((t_total, n), np.int8)  # 0 stay, 1 previous state, 2 from k-1 exit, 3 from k-2 exit
    within = np.ones(n, bool)
    within[first] = False
    for t in range(1, t_total):
        stay = delta + self_p
        move = np.full(n, NEG)
        move[1:] = np.where(within[1:], delta[:-1] + next_p[:-1], NEG)
        exits = delta[last] + next_p[last]
        from1 = np.full(u, NEG)
        from1[1:] = exits[:-1]
        from2 = np.full(u, NEG)
        from2[2:] = np.where(skip_ok[2:], exits[:-2], NEG)
        enter = np.full(n, NEG)
        enter[first] = np.maximum(from1, from2)
        cand = np.stack([stay, move, enter])
        choice = cand.argmax(0).astype(np.int8)
        entering = choice[first] == 2
        choice[first[entering]] = np.where(from1[entering] >= from2[entering], 2, 3)
        back[t] = choice
        delta = cand.max(0) + emissions[t]
    ends = [n - 1] + ([n - 4] if optional[-1] and u > 1 else [])
    s = max(ends, key=lambda i: delta[i])
    total = float(delta[s])
    path = np.empty(t_total, np.int64)
    path[-1] = s
    step = np.array([0, 1, 1, 4])
    for t in range(t_total - 1, 0, -1):
        s -= step[back[t, s]]
        path[t - 1] = s
    return Alignment(unit_of_frame=path // STATES, state_of_frame=path, log_likelihood=total)
