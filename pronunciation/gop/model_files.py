"""Read pocketsphinx's en-US PTM acoustic model (the files its pip package ships) into numpy.

The model: 42 CI phones (codebooks) x 3 feature streams x 128 diagonal Gaussians over 13-dim
cepstra, ~5,000 tied senones each a mixture over its base phone's codebook (weights in
`sendump`), 3-state left-to-right HMMs (`transition_matrices`), triphones in `mdef`. Reading the
parameters directly lets the engine align and score every frame itself instead of depending on
pocketsphinx's pruned decoder (which fails on 13% of learners' clips).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

SENDUMP_SCALE = 1024 * np.log(1.0001)  # sendump stores -log(w) / log(1.0001) >> 10 as uint8


def model_dir() -> Path:
    """The en-US model folder inside the installed pocketsphinx package."""
    import pocketsphinx

    return Path(pocketsphinx.get_model_path()) / "en-us" / "en-us"


def _s3_body(data: bytes) -> int:
    """Offset just past a sphinx3 binary header and its byte-order magic."""
    o = data.index(b"endhdr\n") + 7
    (magic,) = struct.unpack_from("<I", data, o)
    if magic != 0x11223344:
        raise ValueError(f"unexpected byte-order magic {magic:#x}")
    return o + 4


def read_gaussians(path: Path) -> np.ndarray:
    """means/variances -> (codebook, stream, density, dim) float32."""
    b = path.read_bytes()
    o = _s3_body(b)
    n_cb, n_feat, n_dens = struct.unpack_from("<3i", b, o)
    o += 12
    veclen = struct.unpack_from(f"<{n_feat}i", b, o)
    o += 4 * n_feat
    (n,) = struct.unpack_from("<i", b, o)
    o += 4
    if len(set(veclen)) != 1 or n != n_cb * n_dens * sum(veclen):
        raise ValueError(f"unsupported Gaussian layout in {path}")
    flat = np.frombuffer(b, "<f4", n, o).reshape(n_cb, n_feat, n_dens, veclen[0])
    return flat.astype(np.float32)


def read_transitions(path: Path) -> np.ndarray:
    """transition_matrices -> (n_tmat, 3, 4), rows normalised to probabilities."""
    b = path.read_bytes()
    o = _s3_body(b)
    n_tmat, nr, nc = struct.unpack_from("<3i", b, o)
    t = np.frombuffer(b, "<f4", n_tmat * nr * nc, o + 16).reshape(n_tmat, nr, nc).astype(np.float64)
    return t / t.sum(-1, keepdims=True)


def read_sendump(path: Path) -> np.ndarray:
    """sendump -> mixture log-weights (stream, density, senone) float32."""
    b = path.read_bytes()
    o = 0
    while True:  # length-prefixed title strings, ended by a zero length
        (n,) = struct.unpack_from("<i", b, o)
        o += 4
        if n == 0:
            break
        o += n
    rows, cols = struct.unpack_from("<ii", b, o)
    o += 8
    raw = np.frombuffer(b, np.uint8, 3 * rows * cols, o).reshape(3, rows, cols)
    return (-raw.astype(np.float32) * SENDUMP_SCALE).astype(np.float32)


@dataclass(frozen=True)
class ModelDef:
    """The binary mdef: phone names, each phone's senone triple and tmat, triphone lookup."""

    names: tuple[str, ...]  # CI phone names; index = codebook
    phone_senones: np.ndarray  # (n_phone, 3) senone ids per HMM state
    phone_tmat: np.ndarray  # (n_phone,) transition matrix id
    senone_base: np.ndarray  # (n_senone,) CI phone (codebook) of each senone
    triphones: dict[tuple[int, int, int, int], int]  # (base, left, right, word position) -> phone id


def read_mdef(path: Path) -> ModelDef:
    b = path.read_bytes()
    o = 8
    (hlen,) = struct.unpack_from("<i", b, o)
    o += 4 + hlen
    n_ci, n_phone, n_emit, _n_ci_sen, n_sen, _n_tmat, n_sseq, _n_ctx, n_cd_tree, _sil = struct.unpack_from("<10i", b, o)
    o += 40
    names = []
    for _ in range(n_ci):
        e = b.index(b"\0", o)
        names.append(b[o:e].decode())
        o = e + 1
    o = ((o + 3) & ~3) + n_cd_tree * 8
    rec = np.dtype([("ssid", "<i4"), ("tmat", "<i4"), ("attr", "u1", (4,))])
    phones = np.frombuffer(b, rec, n_phone, o)
    sseq = np.frombuffer(b, "<i2", n_sseq * n_emit, len(b) - n_sseq * n_emit * 2).reshape(n_sseq, n_emit)
    phone_senones = sseq[phones["ssid"]].astype(np.int64)
    base = np.arange(n_phone)
    base[n_ci:] = phones["attr"][n_ci:, 1]
    senone_base = np.zeros(n_sen, np.int64)
    senone_base[phone_senones] = base[:, None]
    tri = {
        (int(a[1]), int(a[2]), int(a[3]), int(a[0])): i
        for i, a in enumerate(phones["attr"][n_ci:], start=n_ci)
    }
    return ModelDef(tuple(names), phone_senones, phones["tmat"].astype(np.int64), senone_base, tri)


@dataclass(frozen=True)
class AcousticModel:
    """All parameters needed to score frames, precomputed for vectorised Gaussian evaluation."""

    mdef: ModelDef
    means: np.ndarray  # (cb, stream, dens, dim)
    inv_var: np.ndarray  # (cb, stream, dens, dim)
    gconst: np.ndarray  # (cb, stream, dens) log normaliser
    log_weights: np.ndarray  # (stream, dens, senone)
    transitions: np.ndarray  # (n_tmat, 3, 4)
    quadratic: np.ndarray  # (stream, 2 * dim + 1, cb * dens): [x^2, x, 1] -> log density


    def phone_index(self, name: str) -> int:
        return self.mdef.names.index(name)


@lru_cache(maxsize=1)
def load_acoustic_model(path: str | None = None) -> AcousticModel:
    """Load (once per process) the model from `path` or the pocketsphinx package."""
    d = Path(path) if path else model_dir()
    means = read_gaussians(d / "means")
    var = np.maximum(read_gaussians(d / "variances"), 1e-4)
    iv = 1.0 / var
    gconst = -0.5 * np.log(2 * np.pi * var).sum(-1)
    quad = []
    for s in range(means.shape[1]):
        m, v = means[:, s].reshape(-1, means.shape[-1]), iv[:, s].reshape(-1, means.shape[-1])
        const = gconst[:, s].reshape(-1) - 0.5 * (m * m * v).sum(1)
        quad.append(np.vstack([-0.5 * v.T, (m * v).T, const[None]]))
    return AcousticModel(
        mdef=read_mdef(d / "mdef"),
        means=means,
        inv_var=iv.astype(np.float32),
        gconst=gconst.astype(np.float32),
        log_weights=read_sendump(d / "sendump"),
        transitions=read_transitions(d / "transition_matrices"),
        quadratic=np.stack(quad).astype(np.float32),
    )
