"""`apa-fleet evaluate DIR`: score a labelled folder with an engine and compare with the experts.

DIR is an annotation-batch folder (scores.json + audio named by utterance id), such as
../shared/data/speechocean762/test. Prints PCC, SCC and RMSE per aspect beside the paper's
fine-tuned Qwen2-Audio, GOPT and Azure figures; optionally writes the predictions (scores.json
format, floats), a Markdown report and a PNG of predicted vs expert sentence scores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cli.context import settings

console = Console()


def _f(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def _rows(metrics: dict) -> list[list[str]]:
    from pronunciation.corpus_metrics import ROWS
    from pronunciation.published import PUBLISHED

    out = []
    for _, _, label in ROWS:
        m = metrics.get(label)
        ours = [_f(m.pcc), _f(m.scc), _f(m.rmse), str(m.n)] if m else ["-", "-", "-", "0"]
        pub = [f"{_f(v.get(label, (None, None))[0])} / {_f(v.get(label, (None, None))[1])}" for v in PUBLISHED.values()]
        out.append([label, *ours, *pub])
    return out


def _header() -> list[str]:
    from pronunciation.published import PUBLISHED

    return ["aspect", "PCC", "SCC", "RMSE", "n", *PUBLISHED.keys()]


def write_plot(gold: dict, pred: dict, path: Path) -> None:
    """Predicted vs expert, one panel per sentence aspect."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("accuracy", "accuracy"), ("fluency", "fluency"), ("prosodic", "prosody"), ("total", "total")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 4))
    for ax, (k, title) in zip(axes, keys, strict=True):
        both = [u for u in gold if u in pred and pred[u].get(k) is not None]
        ax.scatter([gold[u][k] for u in both], [pred[u][k] for u in both], s=4, alpha=0.3)
        ax.plot([0, 10], [0, 10], "k--", lw=0.8)
        ax.set(title=title, xlabel="expert", ylabel="predicted", xlim=(0, 10.5), ylim=(0, 10.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="Folder with scores.json and audio.")],
    engine: Annotated[str | None, typer.Option(help="gop or qwen2-audio; default: APA_ENGINE (gop).")] = None,
    predictions: Annotated[Path | None, typer.Option(help="Write the engine's scores here (scores.json format).")] = None,
    report: Annotated[Path | None, typer.Option(help="Write a Markdown report here (and a PNG beside it).")] = None,
    plot: Annotated[Path | None, typer.Option(help="PNG of predicted vs expert sentence scores.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N utterances (subsets mislead: see README).")] = None,
) -> None:
    """Score a labelled folder and print PCC / SCC / RMSE per aspect beside published figures."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from cli.score import ensure_engine_name
    from pronunciation.corpus_eval import predict_folder
    from pronunciation.corpus_metrics import corpus_metrics
    from pronunciation.engines import load_engine
    from pronunciation.gop.dataset import read_folder

    cfg = settings()
    name = ensure_engine_name(engine or cfg.effective_engine)
    if not (folder / "scores.json").exists():
        console.print(f"[red]error:[/red] {folder} has no scores.json")
        raise typer.Exit(2)
    eng = load_engine(name, model_path=cfg.effective_model_path, device=cfg.device, head_dir=cfg.gop_head_dir or None,
                      tiny=cfg.uses_tiny_model)
    total = len(read_folder(folder)[:limit])
    with Progress(TextColumn(f"{name} {folder.name}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        task = progress.add_task("score", total=total)
        gold, pred, failed = predict_folder(eng, folder, limit=limit, on_item=lambda _: progress.advance(task))
    result = corpus_metrics(gold, pred)
    counts = f"{result.utterances} utterances, {len(failed)} failed"
    title = f"{name} {eng.model_version} on {folder} ({counts})"
    table = Table(*_header(), title=f"{name} {eng.model_version}")
    for row in _rows(result.metrics):
        table.add_row(*row)
    # a pipe or file gets the whole table, not one cut to 80 columns
    (console if console.is_terminal else Console(width=220)).print(table)
    console.print(f"{counts} in {folder}")
    if failed:
        console.print(f"[yellow]{len(failed)} utterances failed:[/yellow] " + ", ".join(
            f"{u} ({c})" for u, c in list(failed.items())[:10]))
    if predictions is not None:
        predictions.write_text(json.dumps(pred, indent=1) + "\n")
        console.print(f"predictions -> {predictions}")
    if report is not None and plot is None:
        plot = report.with_suffix(".png")
    if plot is not None:
        write_plot(gold, pred, plot)
        console.print(f"plot -> {plot}")
    if report is not None:
        lines = [f"# {title}", "", "| " + " | ".join(_header()) + " |", "|" + "---|" * len(_header())]
        lines += ["| " + " | ".join(r) + " |" for r in _rows(result.metrics)]
        lines += ["", "Published columns are (PCC / SCC) from Table 1 of the paper (../shared/reference/).",
                  f"Failed utterances: {len(failed)}.", "", f"![predicted vs expert]({plot.name if plot else ''})", ""]
        report.write_text("\n".join(lines))
        console.print(f"report -> {report}")
