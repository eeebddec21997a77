"""The README's first command: `apa-fleet run` on the embedded defaults (SQLite, local folder,
filesystem broker, the gop engine on CPU), with no service at all, scores the demo recordings for
real: no tiny-model score table anywhere."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow


def test_run_on_embedded_defaults_scores_the_demo(tmp_path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APA_")}
    env.update({"APA_GATEWAY_PORT": str(port), "APA_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                "HF_HUB_OFFLINE": "1", "COLUMNS": "80"})  # a newcomer's terminal
    proc = subprocess.run([sys.executable, "-m", "cli.main", "run", "--exit-after-demo"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert out.count(" scored ") >= 3 and "(engine gop)" in out and "scores mean nothing" not in out
    assert "value (expected value)" in out and "KEY=apa_" in out and "next, try:" in out
    assert "…" not in out  # the table fits 80 columns
    assert {f"learner-{i}" for i in (1, 2, 3)} <= set(out.split())  # one learner per clip
    # The demo's polling stays a few lines of the gateway's access log.
    assert out.count('"GET /v1/submissions/') <= 25
    assert (tmp_path / "var" / "apa-fleet.db").exists()  # the embedded SQLite record
    assert list((tmp_path / "var" / "objects" / "tenants").glob("*/demo/*.flac"))  # in the demo tenant's folder
