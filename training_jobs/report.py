"""The job report: a markdown table (candidate vs baseline per aspect) and a PNG (loss curve and
SCC/PCC bars), stored next to the job in object storage; the job row's report_uri points to the
markdown, which links the PNG and the JSON it was made from.

matplotlib runs on its Agg backend (no display on workers), imported only here.
"""

from __future__ import annotations

import io
import json
from typing import Any

from fleet.storage import ObjectStore
from training_jobs.config import ASPECT_KEYS


STAGE_LABELS: dict[str, str] = {"sft": "SFT (cross-entropy)", "simpo": "SimPO + 0.1 x CE (preference stage)"}


def _is_nan(x: float | None) -> bool:
    return x is None or x != x


def stage_spans(losses: list[tuple[int, str, float]]) -> list[tuple[str, int, int]]:
    """(stage, first step, last step) in order: the loss curve's stages, each labelled on its own."""
    spans: list[tuple[str, int, int]] = []
    for step, stage, _ in losses:
        if spans and spans[-1][0] == stage:
            spans[-1] = (stage, spans[-1][1], step)
        else:
            spans.append((stage, step, step))
    return spans


def _fmt(x: float | None) -> str:
    return "NaN" if x is None else f"{x:.3f}"


def render_markdown(job_id: str, metrics: dict[str, Any], losses: list[tuple[int, str, float]]) -> str:
    cand = metrics.get("candidate", {})
    base = metrics.get("baseline", {})
    gate = metrics.get("gate", {})
    train = metrics.get("training", {})
    lines = [
        f"# Training job {job_id}",
        "",
        f"- adapter: `{metrics.get('adapter_version', '-')}` (granularity `{metrics.get('granularity', '-')}`)",
        f"- data: {metrics.get('n_train', 0)} training / {metrics.get('n_heldout', 0)} held-out utterances "
        f"({metrics.get('heldout_speakers', 0)} held-out speakers)",
        f"- baseline: {metrics.get('baseline_label', '-')}",
        f"- promotion: {'PROMOTED' if metrics.get('promoted') else 'not promoted'} "
        f"({metrics.get('promotion') or gate.get('reason', '-')})",
        f"- training: {train.get('steps', 0)} steps, {train.get('steps_per_s') or 0:.2f} steps/s, "
        f"peak RSS {train.get('peak_rss_mb', 0):.0f} MB, final loss {_fmt(losses[-1][2] if losses else None)}",
    ]
    for stage, first, last in stage_spans(losses):
        lines.append(f"- stage {STAGE_LABELS.get(stage, stage)}: steps {first}-{last}")
    if metrics.get("heldout_too_small"):
        lines.append(f"- **held-out set too small: {metrics.get('n_heldout', 0)} utterance(s), fewer than "
                     f"min_heldout={metrics.get('min_heldout')}; the numbers below cannot decide a promotion**")
    if metrics.get("model_is_tiny"):
        lines.append("- **tiny random test model: these numbers mean nothing about pronunciation**")
    lines += [
        "",
        "Expected-value scores (ties broken by the model's distribution); argmax in parentheses.",
        "",
        "| aspect | n | candidate PCC | candidate SCC | candidate RMSE | baseline PCC | baseline SCC | baseline RMSE | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for aspect in ASPECT_KEYS:
        if aspect not in cand:
            continue
        c, ca = cand[aspect]["expected"], cand[aspect]["argmax"]
        b = base.get(aspect, {}).get("expected", {})
        ba = base.get(aspect, {}).get("argmax", {})
        note = c.get("reason") or ""
        lines.append(
            f"| {aspect} | {c['n']} | {_fmt(c['pcc'])} ({_fmt(ca['pcc'])}) | {_fmt(c['scc'])} ({_fmt(ca['scc'])}) "
            f"| {_fmt(c['rmse'])} ({_fmt(ca['rmse'])}) | {_fmt(b.get('pcc'))} ({_fmt(ba.get('pcc'))}) "
            f"| {_fmt(b.get('scc'))} ({_fmt(ba.get('scc'))}) | {_fmt(b.get('rmse'))} ({_fmt(ba.get('rmse'))}) | {note} |"
        )
    lines += ["", "![loss and metrics](report.png)", ""]
    return "\n".join(lines)


def aspect_labels(cand: dict[str, Any], aspects: list[str]) -> list[str]:
    """Tick labels with each aspect's n, and NaN with its reason where the candidate has none."""
    out = []
    for a in aspects:
        m = cand.get(a, {}).get("expected", {})
        label = f"{a} (n={m.get('n', 0)})"
        if _is_nan(m.get("scc")) or _is_nan(m.get("pcc")):
            label += f"\nNaN: {(m.get('reason') or 'undefined')[:28]}"
        out.append(label)
    return out


def render_png(metrics: dict[str, Any], losses: list[tuple[int, str, float]]) -> bytes:
    import matplotlib.pyplot as plt

    fig = report_figure(metrics, losses)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def report_figure(metrics: dict[str, Any], losses: list[tuple[int, str, float]]):
    """The report's matplotlib figure (loss by stage; correlations with n and NaN labelled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for stage, first, last in stage_spans(losses):
        pts = [(step, loss) for step, s, loss in losses if s == stage and first <= step <= last]
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 20 else None,
                 label=f"{STAGE_LABELS.get(stage, stage)}, steps {first}-{last}")
        if first > 1:  # where a later stage (SimPO) starts: its loss is on another scale
            ax1.axvline(first - 0.5, color="grey", linestyle="--", linewidth=0.8)
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("loss (each stage its own objective)")
    ax1.set_title("training loss by stage")
    if losses:
        ax1.legend(fontsize=7)
    cand = metrics.get("candidate", {})
    base = metrics.get("baseline", {})
    aspects = [a for a in ASPECT_KEYS if a in cand]
    x = range(len(aspects))

    def values(m: dict, key: str) -> list[float]:
        out = []
        for a in aspects:
            v = m.get(a, {}).get("expected", {}).get(key)
            out.append(float("nan") if v is None else v)
        return out

    width = 0.2
    ax2.bar([i - 1.5 * width for i in x], values(cand, "scc"), width, label="candidate SCC")
    ax2.bar([i - 0.5 * width for i in x], values(base, "scc"), width, label="baseline SCC")
    ax2.bar([i + 0.5 * width for i in x], values(cand, "pcc"), width, label="candidate PCC")
    ax2.bar([i + 1.5 * width for i in x], values(base, "pcc"), width, label="baseline PCC")
    ax2.set_xticks(list(x))
    ax2.set_xticklabels(aspect_labels(cand, aspects), rotation=30, ha="right", fontsize=8)
    for i, a in enumerate(aspects):  # an empty slot is not a zero: say NaN where a bar is missing
        if all(_is_nan(v[i]) for v in (values(cand, "scc"), values(base, "scc"), values(cand, "pcc"),
                                        values(base, "pcc"))):
            ax2.text(i, 0.02, "NaN", ha="center", va="bottom", fontsize=8, color="firebrick", rotation=90)
        elif any(_is_nan(v[i]) for v in (values(cand, "scc"), values(cand, "pcc"))):
            ax2.text(i, 0.02, "NaN (cand.)", ha="center", va="bottom", fontsize=7, color="firebrick", rotation=90)
    ax2.axhline(0, color="black", linewidth=0.5)
    small = " - TOO FEW TO DECIDE" if metrics.get("heldout_too_small") else ""
    ax2.set_title(f"held-out correlation, n={metrics.get('n_heldout', '?')} utterances "
                  f"({metrics.get('baseline_label', 'baseline')} vs candidate){small}", fontsize=9)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def store_report(store: ObjectStore, job_prefix: str, job_id: str, metrics: dict[str, Any],
                 losses: list[tuple[int, str, float]]) -> str:
    """Write report.md, report.png and report.json under `job_prefix`; returns the report.md URI."""
    base = job_prefix.rstrip("/")
    store.put(f"{base}/report.png", render_png(metrics, losses), content_type="image/png")
    store.put(f"{base}/report.json", json.dumps({"metrics": metrics, "losses": losses}, indent=1).encode(),
              content_type="application/json")
    return store.put(f"{base}/report.md", render_markdown(job_id, metrics, losses).encode(),
                     content_type="text/markdown").uri
