"""The gateway calls batch registration, job creation and the registry: none may import torch."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_light_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import training_jobs.config, training_jobs.annotations, training_jobs.batches, training_jobs.dataset\n"
        "import training_jobs.registry, training_jobs.job, training_jobs.report, cli.train\n"
        "from training_jobs.triggers import create_job, maybe_trigger\n"
        "from training_jobs.registry import activate, list_adapters, rollback, gate\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
