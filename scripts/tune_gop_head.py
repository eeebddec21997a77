"""Choose the gop head's recipe on a speaker-disjoint dev carve of train (never on test).

    python scripts/tune_gop_head.py [--workers 2] [--json benchmarks/results/gop_dev_tuning.json]

Fits each part once on the carve's 100 training speakers (two boosting stacks, transformers at
20/30/60 epochs and 3 seeds), then measures every combination the head can be built from on the
25 dev speakers: PCC / SCC per aspect and the CPU-seconds each combination cost to fit. The result
picked `RECIPES` in `pronunciation/gop/training.py`. Reads the feature cache that
`scripts/train_gop_head.py` writes (var/gop-cache/train.pkl); minutes on 2 cores.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from pronunciation.gop.boosting import N_CI, train_stack
from pronunciation.gop.dataset import extract_folder, read_folder
from pronunciation.gop.head import GopHead
from pronunciation.gop.head_features import phone_rows, phone_stats
from pronunciation.gop.processes import process_pool
from pronunciation.gop.training import RECIPES, measure, speaker_carve
from pronunciation.gop.transformer_train import TransformerSettings, train_transformer

DATA = Path(os.environ.get("SO762", ROOT.parent / "shared" / "data" / "speechocean762"))
REQUIRED = ("phone accuracy", "word accuracy", "word total", "sentence accuracy", "fluency", "prosody",
            "sentence total")
BOOSTING = {"b400": RECIPES["full"].boosting, "b200": RECIPES["fast"].boosting}
TRANSFORMERS = {**{f"t60s{s}": (s, TransformerSettings(epochs=60)) for s in (0, 1, 2)},
                "t30s0": (0, TransformerSettings(epochs=30)), "t20s0": (0, TransformerSettings(epochs=20))}
COMBOS = {
    "full: b400 + t60 x3": ("b400", ["t60s0", "t60s1", "t60s2"]),
    "b400 + t60 x1": ("b400", ["t60s0"]),
    "b400 + t30 x1": ("b400", ["t30s0"]),
    "b200 + t60 x3": ("b200", ["t60s0", "t60s1", "t60s2"]),
    "b200 + t60 x1": ("b200", ["t60s0"]),
    "fast: b200 + t30 x1": ("b200", ["t30s0"]),
    "b200 + t20 x1": ("b200", ["t20s0"]),
    "b400 only": ("b400", []),
    "b200 only": ("b200", []),
    "t60 x3 only": (None, ["t60s0", "t60s1", "t60s2"]),
    "t30 x1 only": (None, ["t30s0"]),
}


def _timed(fn, *args):
    t0 = time.process_time()
    out = fn(*args)
    return out, time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=ROOT / "var" / "gop-cache" / "train.pkl")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the table here")
    a = ap.parse_args()
    train = read_folder(DATA / "train")
    feats = extract_folder(DATA / "train", cache=a.cache, workers=a.workers, progress=True)
    fit, dev = speaker_carve(train)
    fit = [u for u in fit if u.utt_id in feats]
    f, labels, speakers = [feats[u.utt_id] for u in fit], [u.labels for u in fit], [u.speaker for u in fit]
    stats = phone_stats(np.vstack([phone_rows(x) for x in f]), N_CI)
    print(f"fit on {len(fit)} utterances ({len(set(speakers))} speakers), dev {len(dev)} "
          f"({len({u.speaker for u in dev})} speakers)", flush=True)
    parts: dict[str, tuple] = {}
    with process_pool(a.workers) as pool:
        jobs = {k: pool.submit(_timed, train_stack, f, labels, speakers, cfg, lambda *_: None, None)
                for k, cfg in BOOSTING.items()}
        jobs.update({k: pool.submit(_timed, train_transformer, f, labels, stats, seed, cfg)
                     for k, (seed, cfg) in TRANSFORMERS.items()})
        for k, job in jobs.items():
            parts[k] = job.result()
            print(f"  {k}: {parts[k][1]:.0f} CPU-s", flush=True)
    rows = {}
    print(f"{'recipe':22s} {'CPU-s':>6s} {'mean PCC':>8s}  " + "  ".join(f"{k[:13]:>13s}" for k in REQUIRED))
    for name, (b, ts) in COMBOS.items():
        head = GopHead(parts[b][0] if b else None, [parts[t][0] for t in ts], stats, {})
        m = measure(head, dev, feats)
        cpu = (parts[b][1] if b else 0.0) + sum(parts[t][1] for t in ts)
        mean = float(np.mean([m[k]["pcc"] for k in REQUIRED]))
        rows[name] = {"cpu_s": round(cpu, 1), "mean_pcc": round(mean, 4), "metrics": m}
        print(f"{name:22s} {cpu:6.0f} {mean:8.3f}  "
              + "  ".join(f"{m[k]['pcc']:.3f}/{m[k]['scc']:.3f}" for k in REQUIRED), flush=True)
    if a.json:
        a.json.write_text(json.dumps({"fit_utterances": len(fit), "dev_utterances": len(dev), "recipes": rows}, indent=1))


if __name__ == "__main__":
    main()
