"""Extract and cache GOP features for a speechocean762-layout folder (scores.json/manifest + audio).

    python scripts/extract_gop_features.py ../shared/data/speechocean762/train var/gop-cache/train.pkl --workers 2

The cache (a pickle of utt_id -> feature arrays, tagged with FEATURE_VERSION) lets the head be
trained and evaluated without re-running the acoustic model. Not committed: it is rebuilt from data.
"""

from __future__ import annotations

import argparse
import os

# One BLAS thread per process: the model's matrix products are small, and extra BLAS threads spin
# on the other cores (measured: twice the CPU time per utterance).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pronunciation.gop.dataset import extract_folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    feats = extract_folder(a.folder, cache=a.out, workers=a.workers, progress=True)
    print(f"{len(feats)} utterances -> {a.out}")


if __name__ == "__main__":
    main()
