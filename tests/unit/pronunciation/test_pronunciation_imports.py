"""pronunciation/'s domain modules must stay importable without the heavy or service stacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
MODULES = ["errors", "schema", "lexicon", "audio", "prompts", "output_format", "metrics", "template"]
FORBIDDEN = ["sqlalchemy", "celery", "fastapi", "torch", "transformers", "scipy"]


def test_no_forbidden_imports() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for m in {MODULES!r}: importlib.import_module('pronunciation.' + m)\n"
        f"print(json.dumps([f for f in {FORBIDDEN!r} if f in sys.modules]))\n"
    )
    env = {"PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True, env=env)
    assert json.loads(out.stdout) == []
