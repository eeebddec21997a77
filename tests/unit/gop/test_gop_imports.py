"""A gop process never loads torch or transformers: that is what keeps a gop worker small."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_gop_scoring_path_imports_no_torch() -> None:
    code = (
        "import json, sys, numpy as np\n"
        "from pronunciation.assess import AssessmentRequest, assess\n"
        "from pronunciation.engines import load_engine\n"
        "from pronunciation.lexicon import build_reference\n"
        "x = (np.sin(np.arange(32000) * 0.07) * 0.3).astype(np.float32)\n"
        "[r] = assess(load_engine('gop'), [AssessmentRequest(x, build_reference('HELLO WORLD'))])\n"
        "print(json.dumps([r.engine, [m for m in ('torch', 'transformers') if m in sys.modules]]))\n"
    )
    env = {"PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True, env=env)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["gop", []]
