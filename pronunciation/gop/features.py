"""Audio + reference -> `UtteranceFeatures`: everything the head needs, as small numpy arrays.

This is the engine's expensive half (the head is cheap), and the unit that training caches.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from pronunciation.gop.align import STATES, ChainUnit, viterbi
from pronunciation.gop.mfcc import features as mfcc_features
from pronunciation.gop.model_files import AcousticModel, load_acoustic_model
from pronunciation.gop.phone_scores import frame_posteriors, segment_scores
from pronunciation.gop.prosody import utterance_features
from pronunciation.gop.senones import gaussian_loglik, senone_loglik
from pronunciation.lexicon import Reference

FEATURE_VERSION = "gop-features-1"


def base_phone(phone: str) -> str:
    """ARPAbet without the stress digit: the model's CI phone name."""
    return phone.rstrip("012")


@dataclass(frozen=True)
class UtteranceFeatures:
    phone_ids: np.ndarray  # (P,) CI phone index in the model
    word_of_phone: np.ndarray  # (P,) word index
    pos_in_word: np.ndarray  # (P,)
    scalars: np.ndarray  # (P, len(PHONE_SCALARS))
    posteriors: np.ndarray  # (P, n_real)
    log_ratios: np.ndarray  # (P, n_real)
    phone_start: np.ndarray  # (P,) first frame
    phone_frames: np.ndarray  # (P,) frames aligned
    silence_after: np.ndarray  # (P,) frames of optional silence after the phone (word-final only)
    utterance: np.ndarray  # (len(UTTERANCE_FEATURES),)
    mean_energy: float

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_arrays(cls, d: dict[str, np.ndarray]) -> UtteranceFeatures:
        kw = {f.name: d[f.name] for f in fields(cls)}
        kw["mean_energy"] = float(kw["mean_energy"])
        return cls(**kw)


class FeatureExtractor:
    """Holds the acoustic model and its lookups; `extract` is pure per call (thread-safe)."""

    def __init__(self, am: AcousticModel | None = None) -> None:
        self.am = am or load_acoustic_model()
        names = self.am.mdef.names
        self.ci = {n: i for i, n in enumerate(names)}
        self.sil = self.ci["SIL"]
        self.noise = self.ci.get("+NSN+", self.sil)
        self.real = np.array([i for i, n in enumerate(names) if not n.startswith("+")])
        self.real_index = {int(c): k for k, c in enumerate(self.real)}
        self.ci_senones = self.am.mdef.phone_senones[: len(names)]  # (n_ci, 3)

    def _triphone(self, base: int, left: int, right: int, wpos: int) -> int:
        for wp in (wpos, 0, 1, 2, 3):
            k = self.am.mdef.triphones.get((base, left, right, wp))
            if k is not None:
                return k
        return base

    def _chain(self, reference: Reference) -> tuple[list[ChainUnit], list[int], list[int]]:
        """Chain units, the CI phone of each phone unit, and the chain index of each phone unit."""
        md = self.am.mdef
        words = [[self.ci[base_phone(p)] for p in w.phones] for w in reference.words]
        flat = [p for w in words for p in w]

        def unit(pid: int, optional: bool) -> ChainUnit:
            s = md.phone_senones[pid]
            return ChainUnit((int(s[0]), int(s[1]), int(s[2])), int(md.phone_tmat[pid]), optional)

        units = [unit(self.sil, True)]
        ci, where = [], []
        k = 0
        for w in words:
            for j, b in enumerate(w):
                left = flat[k - 1] if k > 0 else self.sil
                right = flat[k + 1] if k + 1 < len(flat) else self.sil
                wpos = 3 if len(w) == 1 else (1 if j == 0 else (2 if j == len(w) - 1 else 0))
                where.append(len(units))
                units.append(unit(self._triphone(b, left, right, wpos), False))
                ci.append(b)
                k += 1
            units.append(unit(self.sil, True))
        return units, ci, where

    def extract(self, audio: np.ndarray, reference: Reference) -> UtteranceFeatures:
        """Align the reference to 16 kHz float audio and compute every feature."""
        feats, mel = mfcc_features(audio)
        t = len(feats)
        energy = np.log(np.exp(mel).sum(1) + 1e-9)
        units, ci, where = self._chain(reference)
        chain_senones = np.array([u.senones for u in units]).reshape(-1)
        needed = np.unique(np.r_[chain_senones, self.ci_senones.reshape(-1)])
        ll = senone_loglik(self.am, gaussian_loglik(self.am, feats), needed)
        col = np.searchsorted(needed, np.arange(needed.max() + 1))
        ci_ll = ll[:, col[self.ci_senones.reshape(-1)]].reshape(t, -1, STATES)
        emissions = ll[:, col[chain_senones]]
        for k, u in enumerate(units):
            if u.optional:  # silence may also be noise (breath, clicks)
                sl = slice(STATES * k, STATES * k + STATES)
                emissions[:, sl] = np.maximum(emissions[:, sl], ci_ll[:, self.noise])
        ali = viterbi(emissions, units, self.am.transitions)
        aligned = emissions[np.arange(t), ali.state_of_frame]
        post = frame_posteriors(ci_ll.max(-1), self.real)
        unit_frames = [np.flatnonzero(ali.unit_of_frame == k) for k in range(len(units))]
        scal, posts, ratios = [], [], []
        for c, k in zip(ci, where):
            s, p, r = segment_scores(unit_frames[k], c, self.real_index[c], post, aligned, energy)
            scal.append(s)
            posts.append(p)
            ratios.append(r)
        starts = np.array([unit_frames[k][0] if len(unit_frames[k]) else 0 for k in where], np.int32)
        lengths = np.array([len(unit_frames[k]) for k in where], np.int32)
        following = [k + 1 if k + 1 < len(units) and units[k + 1].optional else None for k in where]
        sil_after = np.array([len(unit_frames[f]) if f is not None else 0 for f in following], np.int32)
        silences = np.array([len(unit_frames[k]) for k, u in enumerate(units) if u.optional])
        names = [base_phone(p) for w in reference.words for p in w.phones]
        word_of = np.array([i for i, w in enumerate(reference.words) for _ in w.phones], np.int32)
        pos = np.array([j for w in reference.words for j in range(len(w.phones))], np.int32)
        return UtteranceFeatures(
            phone_ids=np.array(ci, np.int32), word_of_phone=word_of, pos_in_word=pos,
            scalars=np.stack(scal), posteriors=np.stack(posts), log_ratios=np.stack(ratios),
            phone_start=starts, phone_frames=lengths, silence_after=sil_after,
            utterance=utterance_features(audio, starts, lengths, names, silences, len(reference.words), energy),
            mean_energy=float(energy.mean()),
        )
