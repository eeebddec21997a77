"""The pages keep the gateway lean: importing them (and building the app) loads no ML or worker code."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

FORBIDDEN = ("torch", "numpy", "soundfile", "soxr", "transformers", "workers", "training_jobs")


def test_ui_modules_import_no_heavy_or_worker_code() -> None:
    code = (
        "import json, sys\n"
        "import api_gateway.ui.pages, api_gateway.ui.sessions, db.teacher_views\n"
        "from api_gateway.app import create_app\n"
        "create_app()\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r}))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "APA_VAR_DIR": "/tmp/apa-ui-imports", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
