"""`apa-fleet evaluate` on a small labelled folder: table beside published figures, predictions
in scores.json format that recompute to the same metrics, a report and a PNG."""

from __future__ import annotations

import json
import shutil

from pronunciation.corpus_metrics import corpus_metrics
from tests.conftest import run_cli
from tests.unit.gop.conftest import SAMPLE, needs_sample

pytestmark = needs_sample


def test_evaluate_writes_predictions_report_and_plot(tmp_path, cli_env) -> None:
    gold_all = json.loads((SAMPLE / "scores.json").read_text())
    ids = list(gold_all)[:6]
    folder = tmp_path / "batch"
    (folder / "audio").mkdir(parents=True)
    (folder / "scores.json").write_text(json.dumps({u: gold_all[u] for u in ids}))
    for u in ids:
        shutil.copy(SAMPLE / "audio" / f"{u}.flac", folder / "audio" / f"{u}.flac")
    pred_path, report = tmp_path / "pred.json", tmp_path / "report.md"
    out = run_cli(["evaluate", str(folder), "--engine", "gop", "--predictions", str(pred_path),
                   "--report", str(report)], cli_env).stdout
    assert "sentence total" in out and "GOPT" in out and "6 utterances, 0 failed" in out
    pred = json.loads(pred_path.read_text())
    assert sorted(pred) == sorted(ids)
    first = pred[ids[0]]
    assert isinstance(first["total"], float) and len(first["words"]) == len(gold_all[ids[0]]["words"])
    assert all(0 <= p <= 2 for w in first["words"] for p in w["phones-accuracy"])
    m = corpus_metrics({u: gold_all[u] for u in ids}, pred).metrics["sentence total"]
    assert f"{m.pcc:.2f}" in report.read_text()
    assert report.with_suffix(".png").stat().st_size > 1000


def test_evaluate_refuses_a_folder_without_scores(tmp_path, cli_env) -> None:
    proc = run_cli(["evaluate", str(tmp_path)], cli_env, check=False)
    assert proc.returncode == 2 and "scores.json" in proc.stdout
