"""The README's embedded-mode shell examples, extracted from README.md and run as written against an
embedded `apa-fleet run`, so a README that drifts from the code fails here.

A block is tested when the line before its ```sh fence is `<!-- readme-test: embedded -->`. The
test sets only what the README tells a reader to set (`REC`, `APA_PUBLIC_BASE_URL` for a port other
than 8000) and gives the run folder a `.venv` (the project's virtual environment), as `make run` does.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- readme-test: embedded -->"
SAMPLE_DIR = ROOT.parent.parent / "shared" / "data" / "speechocean762-sample"


def readme_blocks(text: str) -> list[str]:
    """The sh blocks right after the marker line."""
    return re.findall(re.escape(MARKER) + r"\n```sh\n(.*?)\n```", text, flags=re.S)


def _sample_clip() -> Path:
    for base in (SAMPLE_DIR, Path("/work/shared/data/speechocean762-sample")):
        clips = sorted(base.rglob("*.flac")) if base.exists() else []
        if clips:
            return clips[0]
    raise AssertionError("no speechocean762 sample clip found (../shared/data/speechocean762-sample)")


def test_readme_marks_the_curl_section() -> None:
    blocks = readme_blocks((ROOT / "README.md").read_text())
    assert blocks, f"no block marked {MARKER} in README.md"
    assert any("/v1/submissions" in b for b in blocks)


def test_readme_examples_run_as_written_on_the_embedded_mode(tmp_path: Path) -> None:
    blocks = readme_blocks((ROOT / "README.md").read_text())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))  # `make run` leaves the venv in the folder
    env = {k: v for k, v in os.environ.items() if not k.startswith("APA_")}
    env.update({"APA_GATEWAY_PORT": str(port), "APA_PUBLIC_BASE_URL": base, "HF_HUB_OFFLINE": "1",
                "PYTHONPATH": str(ROOT)})
    run = subprocess.Popen([sys.executable, "-m", "cli.main", "run", "--no-demo"], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert run.poll() is None, run.stdout.read()[-3000:]
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the embedded gateway did not come up in 60 s"
            time.sleep(0.3)
        block_env = {**env, "REC": str(_sample_clip())}
        for block in blocks:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=block_env,
                                  capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                os.killpg(run.pid, signal.SIGTERM)
                raise AssertionError(f"README block failed ({done.returncode}):\n{block}\n---\n{done.stdout[-3000:]}\n"
                                     f"{done.stderr[-3000:]}\n--- apa-fleet run:\n{run.communicate(timeout=30)[0][-4000:]}")
            out = done.stdout
            accepted = json.loads(out[out.index('{"id"'):out.index("}", out.index('{"id"')) + 1])
            assert accepted["status"] == "queued" and accepted["duplicate"] is False
            assert '"submission_id":"lms-42"' in out and '"scales":' in out
            assert "apa_callback_deliveries" in out
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        try:
            run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
