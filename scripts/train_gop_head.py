"""Rebuild the shipped `gop` head from ../shared/data (or tune it on a speaker-disjoint dev carve).

    python scripts/train_gop_head.py                 # train on all of train, measure on test, write weights
    python scripts/train_gop_head.py --dev           # train on 80% of train's speakers, measure on the rest
    python scripts/train_gop_head.py --dev --recipe fast --seeds 3   # a recipe, with knobs changed

Features are cached under var/gop-cache/ (first run extracts them: minutes on 2 cores).
Deterministic: the same data and settings give the same head (same digest).
"""

from __future__ import annotations

import argparse
import os

# One BLAS thread per process: the model's matrix products are small, and extra BLAS threads spin
# on the other cores (measured: twice the CPU time per utterance).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pronunciation.gop.dataset import extract_folder, read_folder
from pronunciation.gop.head import WEIGHTS_DIR
from pronunciation.gop.training import (
    RECIPES,
    fit_head,
    head_digest,
    measure,
    recipe_settings,
    speaker_carve,
)

DATA = Path(os.environ.get("SO762", ROOT.parent / "shared" / "data" / "speechocean762"))
SAMPLE = Path(os.environ.get("SO762_SAMPLE", ROOT.parent / "shared" / "data" / "speechocean762-sample"))
CHECK_UTTERANCES = 40  # first utterances of the 600-clip sample: the test suite's quick re-measure


def _table(name: str, metrics: dict) -> None:
    print(f"== {name}")
    for k, m in metrics.items():
        print(f"{k:18s} PCC {m['pcc']:.3f}  SCC {m['scc']:.3f}  RMSE {m['rmse']:.3f}  n={m['n']}")


def _shown(path: Path) -> str:
    """A data path as recorded in head.json: relative to the repository, not to this machine."""
    return os.path.relpath(path.resolve(), ROOT)


def _libraries() -> dict[str, str]:
    """The versions that fitted the head: a pickled scikit-learn model is only sure to load, and a
    rebuild only sure to be bit-identical, with the same ones."""
    from importlib.metadata import version

    return {name: version(name) for name in ("numpy", "scikit-learn", "scipy", "torch")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dev", action="store_true", help="tune: measure on a speaker-disjoint 20%% of train")
    ap.add_argument("--cache", type=Path, default=ROOT / "var" / "gop-cache")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="full",
                    help="named settings (pronunciation.gop.training.RECIPES); the shipped head is 'full'")
    ap.add_argument("--seeds", type=int, help="transformer seeds (0 = boosting only)")
    ap.add_argument("--no-boosting", action="store_true")
    ap.add_argument("--epochs", type=int, help="transformer epochs")
    ap.add_argument("--phone-iterations", type=int)
    ap.add_argument("--upper-iterations", type=int)
    ap.add_argument("--learning-rate", type=float, help="boosting's")
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    a = ap.parse_args()
    settings = recipe_settings(a.recipe, seeds=a.seeds, epochs=a.epochs, phone_iterations=a.phone_iterations,
                               upper_iterations=a.upper_iterations, learning_rate=a.learning_rate,
                               use_boosting=not a.no_boosting)
    train = read_folder(DATA / "train")
    ftr = extract_folder(DATA / "train", cache=a.cache / "train.pkl", workers=a.workers, progress=True)
    if a.dev:
        fit, dev = speaker_carve(train)
        t0 = time.time()
        head = fit_head(fit, ftr, settings)
        print(f"fit {len(fit)} utterances in {time.time() - t0:.0f} s: {settings}")
        _table(f"dev carve ({len(dev)} utterances, speaker-disjoint)", measure(head, dev, ftr))
        return
    t0 = time.time()
    head = fit_head(train, ftr, settings)
    took = time.time() - t0
    test = read_folder(DATA / "test")
    while os.environ.get("GOP_WAIT_FOR_CACHE") and not (a.cache / "test.pkl").exists():
        time.sleep(10)  # another process is extracting the test split's features
    fte = extract_folder(DATA / "test", cache=a.cache / "test.pkl", workers=a.workers, progress=True)
    metrics = measure(head, test, fte)
    _table(f"test ({len(test)} utterances)", metrics)
    check = read_folder(SAMPLE)[:CHECK_UTTERANCES]
    fcheck = extract_folder(SAMPLE, utterances=check)
    digest = head_digest(head)
    head.metadata.update({
        "engine": "gop",
        "version": f"gop-{digest}",
        "trained_seconds": round(took, 1),
        "recipe": a.recipe,
        "libraries": _libraries(),
        "data": {"train": _shown(DATA / "train"), "test": _shown(DATA / "test"),
                 "license": "speechocean762, CC BY 4.0 (Zhang et al., Interspeech 2021)"},
        "test_metrics": metrics,
        "check": {"folder": "speechocean762-sample", "first_utterances": CHECK_UTTERANCES,
                  "metrics": measure(head, check, fcheck)},
    })
    head.save(a.out)
    print(f"wrote {a.out} version gop-{digest} ({sum(p.stat().st_size for p in a.out.iterdir()) / 1e6:.1f} MB)")
    json.dump(metrics, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
