"""Real speechocean762 clips for the gop engine's tests (skipped when ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "speechocean762-sample"

needs_sample = pytest.mark.skipif(not (SAMPLE / "scores.json").is_file(),
                                  reason=f"speechocean762 sample not found at {SAMPLE}")


@pytest.fixture(scope="session")
def gop_engine():
    from pronunciation.engines import GopEngine

    return GopEngine()


@pytest.fixture(scope="session")
def sample_items():
    from pronunciation.gop.dataset import read_folder

    return {u.utt_id: u for u in read_folder(SAMPLE)}
