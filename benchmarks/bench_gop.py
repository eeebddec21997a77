"""Benchmark: the gop engine's speed (x real time per CPU core) and a gop worker's peak memory.

    PYTHONPATH=. python benchmarks/bench_gop.py --n 60

On speechocean762-sample utterances (../shared/data), one process pinned to one thread
(OMP/OpenBLAS threads = 1), so "x real time" is per core: seconds of audio scored per second of
wall time, split into feature extraction (acoustic model, alignment, GOP, prosody) and head.
Peak RSS is measured in a separate process that imports the Celery worker app and scores like a
worker (`ModelPool.ready_model()` + `assess`), as `ru_maxrss`. Targets: >= 10x real time per
core, < 500 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT.parent / "shared" / "data" / "speechocean762-sample"

WORKER_PROBE = """
import resource, sys, json
from fleet.settings import Settings
import workers.tasks  # the Celery worker's imports
from workers.model_pool import ModelPool
from pronunciation.assess import AssessmentRequest, assess
from pronunciation.audio import load_audio
from pronunciation.gop.dataset import read_folder
items = read_folder(__import__('pathlib').Path(sys.argv[1]))[: int(sys.argv[2])]
pool = ModelPool(Settings(engine="gop"), None, None)
for u in items:
    assess(pool.ready_model(), [AssessmentRequest(load_audio(u.audio_path.read_bytes()), u.reference)])
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60)
    a = ap.parse_args()
    from pronunciation.audio import load_audio
    from pronunciation.engines import GopEngine
    from pronunciation.gop.dataset import read_folder

    items = read_folder(SAMPLE)[: a.n]
    engine = GopEngine()
    audios = [load_audio(u.audio_path.read_bytes()) for u in items]
    engine.extractor.extract(audios[0], items[0].reference)  # warm up (model load)
    t_feat = t_head = 0.0
    for u, x in zip(items, audios, strict=True):
        t0 = time.perf_counter()
        f = engine.extractor.extract(x, u.reference)
        t1 = time.perf_counter()
        engine.head.predict(f)
        t_head += time.perf_counter() - t1
        t_feat += t1 - t0
    seconds = sum(len(x) for x in audios) / 16000
    probe = subprocess.run([sys.executable, "-c", WORKER_PROBE, str(SAMPLE), "10"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, check=True)
    result = {
        "utterances": len(items), "audio_s": round(seconds, 1),
        "features_s_per_utt": round(t_feat / len(items), 4), "head_s_per_utt": round(t_head / len(items), 4),
        "x_real_time_per_core": round(seconds / (t_feat + t_head), 1),
        "worker_peak_rss_mb": round(json.loads(probe.stdout.strip().splitlines()[-1])["peak_rss_mb"], 0),
        "head_version": engine.model_version,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
