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
        f"- training: {train.get('steps', 0)} steps, {train.get('steps_per_s', 0):.2f} steps/s, "
        f"peak RSS {train.get('peak_rss_mb', 0):.0f} MB, final loss {_fmt(losses[-1][2] if losses else None)}",
    ]
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


def render_png(metrics: dict[str, Any], losses: list[tuple[int, str, float]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for stage in dict.fromkeys(s for _, s, _ in losses):
        pts = [(step, loss) for step, s, loss in losses if s == stage]
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], label=stage)
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("loss")
    ax1.set_title("training loss")
    if losses:
        ax1.legend()
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
    ax2.set_xticklabels(aspects, rotation=30, ha="right", fontsize=8)
    ax2.axhline(0, color="black", linewidth=0.5)
    ax2.set_title(f"held-out correlation ({metrics.get('baseline_label', 'baseline')} vs candidate)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def store_report(store: ObjectStore, job_prefix: str, job_id: str, metrics: dict[str, Any],
                 losses: list[tuple[int, str, float]]) -> str:
    """Write report.md, report.png and report.json under `job_prefix`; returns the report.md URI."""
    base = job_prefix.rstrip("/")
    store.put(f"{base}/report.png", render_png(metrics, losses), content_type="image/png")
    store.put(f"{base}/report.json", json.dumps({"metrics": metrics, "losses": losses}, indent=1).encode(),
              content_type="application/json")
    return store.put(f"{base}/report.md", render_markdown(job_id, metrics, losses).encode(),
                     content_type="text/markdown").uri
