"""The shipped head: small enough to ship, and it reproduces the metrics recorded beside it."""

from __future__ import annotations

import math

from pronunciation.gop.head import HEAD_FILE, META_FILE, WEIGHTS_DIR
from tests.unit.gop.conftest import SAMPLE, needs_sample


def test_head_ships_in_the_package_with_its_record() -> None:
    assert (WEIGHTS_DIR / HEAD_FILE).stat().st_size < 8_000_000
    import json

    meta = json.loads((WEIGHTS_DIR / META_FILE).read_text())
    assert meta["engine"] == "gop" and meta["version"].startswith("gop-")
    assert meta["train_utterances"] == 2500 and meta["test_metrics"]["sentence total"]["n"] == 2000
    assert "CC BY 4.0" in meta["data"]["license"]


@needs_sample
def test_shipped_head_reproduces_its_recorded_check_metrics(gop_engine) -> None:
    """Re-extract features for the check clips and re-measure: within 0.01 of the record."""
    from pronunciation.gop.dataset import extract_folder, read_folder
    from pronunciation.gop.training import measure

    head = gop_engine.head
    check = head.metadata["check"]
    items = read_folder(SAMPLE)[: check["first_utterances"]]
    got = measure(head, items, extract_folder(SAMPLE, utterances=items))
    for label, want in check["metrics"].items():
        for k in ("pcc", "scc", "rmse"):
            if math.isnan(want[k]):
                assert math.isnan(got[label][k]), label
            else:
                assert abs(got[label][k] - want[k]) <= 0.01, (label, k, got[label][k], want[k])
