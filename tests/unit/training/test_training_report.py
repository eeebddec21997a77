"""The report: a markdown table per aspect (candidate vs baseline, NaN with its reason) and a PNG."""

from __future__ import annotations

from fleet.storage import ObjectStore
from training_jobs.report import render_markdown, render_png, store_report


def _cell(pcc, scc, reason=None):
    return {"pcc": pcc, "scc": scc, "rmse": 1.25, "n": 12, "reason": reason, "gold_varies": reason is None}


METRICS = {
    "adapter_version": "v1", "granularity": "sentence", "n_train": 40, "n_heldout": 12, "heldout_speakers": 3,
    "baseline_label": "base", "promoted": True, "promotion": "promoted: mean SCC 0.8 > 0.1",
    "model_is_tiny": True, "gate": {"reason": "mean SCC 0.8 > 0.1"},
    "training": {"steps": 30, "steps_per_s": 9.5, "peak_rss_mb": 900.0},
    "candidate": {"sentence.fluency": {"expected": _cell(0.9, 0.8), "argmax": _cell(0.85, 0.7)},
                  "sentence.completeness": {"expected": _cell(None, None, "gold scores are constant (all 10)"),
                                            "argmax": _cell(None, None, "gold scores are constant (all 10)")}},
    "baseline": {"sentence.fluency": {"expected": _cell(0.1, 0.05), "argmax": _cell(0.0, 0.0)}},
}
LOSSES = [(1, "sft", 3.0), (2, "sft", 2.0), (3, "simpo", 1.5)]


def test_markdown_table() -> None:
    md = render_markdown("job-1", METRICS, LOSSES)
    assert "| sentence.fluency | 12 | 0.900 (0.850) | 0.800 (0.700) | 1.250 (1.250) | 0.100 (0.000) |" in md
    assert "| sentence.completeness | 12 | NaN (NaN) |" in md and "gold scores are constant (all 10)" in md
    assert "PROMOTED" in md and "tiny random test model" in md and "9.50 steps/s" in md


def test_png_and_storage(tmp_path) -> None:
    png = render_png(METRICS, LOSSES)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    store = ObjectStore(tmp_path)
    uri = store_report(store, str(tmp_path / "training" / "job-1"), "job-1", METRICS, LOSSES)
    assert uri.endswith("report.md")
    assert sorted(o.uri.rsplit("/", 1)[1] for o in store.list(str(tmp_path / "training" / "job-1") + "/")) == [
        "report.json", "report.md", "report.png"]


def _texts(fig) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def test_png_labels_nan_aspects_n_and_the_simpo_stage() -> None:
    import matplotlib.pyplot as plt

    from training_jobs.report import report_figure

    fig = report_figure(METRICS, LOSSES)
    texts = "\n".join(_texts(fig))
    plt.close(fig)
    assert "sentence.fluency (n=12)" in texts
    assert "sentence.completeness (n=12)\nNaN: gold scores are constant" in texts
    assert "NaN" in [t.strip() for t in texts.splitlines()]  # the empty bar slot says NaN
    assert "n=12 utterances" in texts
    assert "SFT (cross-entropy), steps 1-2" in texts and "SimPO + 0.1 x CE (preference stage), steps 3-3" in texts
    md = render_markdown("job-1", METRICS, LOSSES)
    assert "- stage SimPO + 0.1 x CE (preference stage): steps 3-3" in md


def test_a_too_small_held_out_set_is_said_plainly() -> None:
    small = {**METRICS, "n_heldout": 1, "min_heldout": 20, "heldout_too_small": True}
    md = render_markdown("job-1", small, LOSSES)
    assert "held-out set too small: 1 utterance(s), fewer than min_heldout=20" in md
    fig = __import__("training_jobs.report", fromlist=["report_figure"]).report_figure(small, LOSSES)
    assert any("TOO FEW TO DECIDE" in t for t in _texts(fig))
