"""GOPT-style transformer over the phone sequence, run with numpy (no torch in the scoring path).

Tokens are the phone rows (normalised) plus a phone-identity embedding and a position embedding;
five extra tokens, one per sentence aspect, carry the utterance's timing/prosody vector. Outputs:
phone accuracy per token, word accuracy/stress/total per token (averaged over the word's phones)
and one sentence score per aspect token. Training is in `transformer_train` (torch); the weights
are exported to plain arrays so scoring needs numpy only, which keeps a worker small.
"""

from __future__ import annotations

import numpy as np

from pronunciation.gop.features import UtteranceFeatures
from pronunciation.gop.head_features import add_phone_zscores, phone_rows

N_ASPECTS = 5
LAYERS = 3
DIM = 32
MAX_PHONES = 128


def token_inputs(f: UtteranceFeatures, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens (P, n), phone ids (P,), utterance vector) before normalisation."""
    rows = add_phone_zscores(phone_rows(f), stats)
    return rows, f.phone_ids.astype(np.int64), f.utterance.astype(np.float32)


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + 1e-5) * w + b


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def forward(w: dict[str, np.ndarray], tokens: np.ndarray, phone_ids: np.ndarray, utt: np.ndarray) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    """One utterance: (phone (P,), word per token (P, 3), sentence (5,)), all on 0..2."""
    x = (tokens - w["x_mean"]) / w["x_sd"]
    u = (utt - w["u_mean"]) / w["u_sd"]
    p = min(len(x), MAX_PHONES)
    x, ids = x[:p], phone_ids[:p]
    h = x @ w["inp.weight"].T + w["inp.bias"] + w["phe.weight"][ids] + w["pos"][0, :p]
    c = w["cls"][0] + (u @ w["ux.weight"].T + w["ux.bias"])[None]
    h = np.vstack([c, h])
    for i in range(LAYERS):
        k = f"enc.layers.{i}."
        qkv = h @ w[k + "self_attn.in_proj_weight"].T + w[k + "self_attn.in_proj_bias"]
        q, kk, v = np.split(qkv, 3, axis=-1)
        a = _softmax(q @ kk.T / np.sqrt(q.shape[-1])) @ v
        a = a @ w[k + "self_attn.out_proj.weight"].T + w[k + "self_attn.out_proj.bias"]
        h = _layer_norm(h + a, w[k + "norm1.weight"], w[k + "norm1.bias"])
        ff = np.maximum(h @ w[k + "linear1.weight"].T + w[k + "linear1.bias"], 0)
        ff = ff @ w[k + "linear2.weight"].T + w[k + "linear2.bias"]
        h = _layer_norm(h + ff, w[k + "norm2.weight"], w[k + "norm2.bias"])
    phones = h[N_ASPECTS:] @ w["hp.weight"].T + w["hp.bias"]
    words = h[N_ASPECTS:] @ w["hw.weight"].T + w["hw.bias"]
    sent = np.array([h[i] @ w[f"hu.{i}.weight"][0] + w[f"hu.{i}.bias"][0] for i in range(N_ASPECTS)])
    if len(tokens) > p:  # beyond the position table: repeat the last token's outputs
        phones = np.r_[phones[:, 0], np.full(len(tokens) - p, phones[-1, 0])]
        words = np.vstack([words, np.repeat(words[-1:], len(tokens) - p, 0)])
        return phones, words, sent
    return phones[:, 0], words, sent


def word_scores(words_per_token: np.ndarray, word_of_phone: np.ndarray) -> np.ndarray:
    """(W, 3) mean of each word's tokens."""
    n = int(word_of_phone.max()) + 1
    return np.vstack([words_per_token[word_of_phone == i].mean(0) for i in range(n)])
