"""Train the GOPT-style transformer (torch, CPU) and export its weights as numpy arrays.

Multi-task: phone accuracy (MSE on 0..2), word accuracy/stress/total and the five sentence
aspects (scaled /5 to 0..2). Deterministic for a seed on one thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pronunciation.gop.features import UtteranceFeatures
from pronunciation.gop.targets import phone_targets, sentence_targets, word_targets
from pronunciation.gop.transformer import (
    DIM,
    LAYERS,
    MAX_PHONES,
    N_ASPECTS,
    token_inputs,
)


@dataclass(frozen=True)
class TransformerSettings:
    epochs: int = 60
    batch_size: int = 25
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    dropout: float = 0.1


def _build(n_features: int, n_utt: int, dropout: float):
    import torch
    from torch import nn

    class GOPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(n_features, DIM)
            self.phe = nn.Embedding(64, DIM)
            self.pos = nn.Parameter(torch.zeros(1, MAX_PHONES, DIM))
            self.cls = nn.Parameter(torch.zeros(1, N_ASPECTS, DIM))
            self.ux = nn.Linear(n_utt, DIM)
            layer = nn.TransformerEncoderLayer(DIM, 1, DIM * 3, dropout=dropout, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
            self.hp = nn.Linear(DIM, 1)
            self.hw = nn.Linear(DIM, 3)
            self.hu = nn.ModuleList([nn.Linear(DIM, 1) for _ in range(N_ASPECTS)])

        def forward(self, x, ph, mask, ux):
            b, t, _ = x.shape
            h = self.inp(x) + self.phe(ph) + self.pos[:, :t]
            c = self.cls.expand(b, -1, -1) + self.ux(ux)[:, None]
            h = torch.cat([c, h], 1)
            pad = torch.cat([torch.zeros(b, N_ASPECTS, dtype=torch.bool), ~mask], 1)
            h = self.enc(h, src_key_padding_mask=pad)
            u = torch.cat([self.hu[i](h[:, i]) for i in range(N_ASPECTS)], 1)
            return self.hp(h[:, N_ASPECTS:]).squeeze(-1), self.hw(h[:, N_ASPECTS:]), u

    return GOPT()


def train_transformer(
    feats: list[UtteranceFeatures], labels: list[dict], stats: np.ndarray, seed: int,
    cfg: TransformerSettings = TransformerSettings(),
) -> dict[str, np.ndarray]:
    """Weights (numpy arrays, including the input normalisation) for `transformer.forward`."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    data = []
    for f, lab in zip(feats, labels, strict=True):
        tok, ids, utt = token_inputs(f, stats)
        tok, ids = tok[:MAX_PHONES], ids[:MAX_PHONES]
        wy = word_targets(lab)[f.word_of_phone[: len(tok)]] / 5
        data.append((tok, ids, utt, phone_targets(lab)[: len(tok)], wy, sentence_targets(lab) / 5))
    allx = np.vstack([d[0] for d in data])
    allu = np.stack([d[2] for d in data])
    norm = {"x_mean": allx.mean(0), "x_sd": allx.std(0) + 1e-4, "u_mean": allu.mean(0), "u_sd": allu.std(0) + 1e-4}
    model = _build(allx.shape[1], allu.shape[1], cfg.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs)

    def batch(items):
        t = max(len(d[0]) for d in items)
        b = len(items)
        x = torch.zeros(b, t, allx.shape[1])
        ph = torch.zeros(b, t, dtype=torch.long)
        m = torch.zeros(b, t, dtype=torch.bool)
        y = torch.zeros(b, t)
        wy = torch.zeros(b, t, 3)
        for i, (tok, ids, _u, py, wyy, _s) in enumerate(items):
            n = len(tok)
            x[i, :n] = torch.from_numpy((tok - norm["x_mean"]) / norm["x_sd"])
            ph[i, :n] = torch.from_numpy(ids)
            m[i, :n] = True
            y[i, :n] = torch.from_numpy(py)
            wy[i, :n] = torch.from_numpy(wyy)
        u = torch.from_numpy(np.stack([(d[2] - norm["u_mean"]) / norm["u_sd"] for d in items]).astype(np.float32))
        s = torch.from_numpy(np.stack([d[5] for d in items]))
        return x, ph, m, y, wy, u, s

    for _ in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(data))
        for i in range(0, len(order), cfg.batch_size):
            x, ph, m, y, wy, u, s = batch([data[k] for k in order[i : i + cfg.batch_size]])
            p, w, su = model(x, ph, m, u)
            loss = ((p - y) ** 2)[m].mean() + ((w - wy) ** 2)[m].mean() + ((su - s) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    weights = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    weights.update({k: v.astype(np.float32) for k, v in norm.items()})
    return weights
