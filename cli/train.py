"""`apa-fleet train`: run a training job in the foreground, with a progress bar.

    apa-fleet train --batch s3://bucket/annotation-batches/2025-03/ --epochs 3 --simpo
    apa-fleet train --job 7d9c...        # resume a job (e.g. after its worker was killed)
    apa-fleet train --engine gop --batch ../shared/data/speechocean762/train   # retrain the GOP head (CPU)

It registers (and validates) the given batches, creates a job (trigger `cli`) unless --job names
one, and runs exactly what the `train` queue runs: `training_jobs.job.run_training_job`. The job
trains on every accepted batch, like a queued job does, unless --params restricts `batch_ids`.
`--engine` picks what is trained (default: the engine this fleet scores with, APA_ENGINE): a LoRA
adapter for qwen2-audio, the head for gop; both go through the same split, gate and registry.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from cli.context import checked_settings, sessions

console = Console()


def train(
    batch: Annotated[list[str] | None, typer.Option("--batch", help="Annotation batch prefix to register first (repeatable).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default APA_TRAIN_EPOCHS, the paper's 3).")] = None,
    simpo: Annotated[bool | None, typer.Option("--simpo/--no-simpo", help="Add the SimPO+CE stage after SFT.")] = None,
    params: Annotated[str | None, typer.Option(help='More job params as JSON, e.g. \'{"lr": 2e-4, "seed": 1}\'.')] = None,
    job: Annotated[str | None, typer.Option(help="Run or resume this existing job id instead of creating one.")] = None,
    engine: Annotated[str | None, typer.Option(help="Engine to train: gop (head, CPU) or qwen2-audio (LoRA); "
                                                     "default: APA_ENGINE's.")] = None,
) -> None:
    """Register batches, then train, evaluate, register and (if it beats the active one) promote an adapter."""
    from db.engine import session_scope
    from fleet.storage import ObjectStore
    from training_jobs.config import ParamsError, TrainingDefaults
    from training_jobs.triggers import JobPending, create_job

    cfg = checked_settings()
    factory = sessions()
    store = ObjectStore.from_settings(cfg)
    defaults = TrainingDefaults()

    try:
        extra = json.loads(params) if params else {}
    except json.JSONDecodeError as exc:
        console.print(f"[red]error:[/red] --params is not JSON: {exc}")
        raise typer.Exit(2) from None
    if not isinstance(extra, dict):
        console.print("[red]error:[/red] --params must be a JSON object")
        raise typer.Exit(2)
    from pronunciation.engines import ENGINES

    engine = engine or cfg.effective_engine
    if engine not in ENGINES:
        console.print(f"[red]error:[/red] unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        raise typer.Exit(2)
    if epochs is not None:
        extra["epochs"] = epochs
    if simpo is not None:
        extra["simpo"] = simpo

    for uri in batch or []:
        with session_scope(factory) as s:
            row = _register_or_exit(s, store, uri, defaults)
            colour = {"accepted": "green", "partial": "yellow"}.get(row.status.value, "red")
            console.print(f"batch {row.uri}: [{colour}]{row.status.value}[/{colour}] "
                          f"({row.n_accepted}/{row.n_items} accepted, {row.n_quarantined} quarantined)")
            for p in (row.problems or [])[:20]:
                console.print(f"  {p.get('utt_id') or '(batch)'}: {p['code']}: {p['message']}")

    if job is None:
        try:
            with session_scope(factory) as s:
                job = str(create_job(s, "cli", extra, defaults, engine=engine).id)
        except (ParamsError, JobPending) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        console.print(f"training job {job} ({engine})")
    elif extra:
        console.print("[yellow]--job given: --epochs/--simpo/--params are ignored (the job keeps its params)[/yellow]")
    _run_with_progress(job, cfg, factory, store, defaults)


def _register_or_exit(session, store, uri: str, defaults):
    """register_batch, with storage faults as one line: a missing setting exits 2 (configuration
    error, like start-up checks), an unreachable store 1; never a traceback."""
    from fleet.checks import ConfigError, fail
    from fleet.storage import StorageError, StorageNotConfigured
    from training_jobs.batches import register_batch

    try:
        return register_batch(session, store, uri, defaults)
    except StorageNotConfigured as exc:
        fail(ConfigError(exc.setting, str(exc)))
    except StorageError as exc:
        console.print(f"[red]error:[/red] {exc.code}: {exc}")
        raise typer.Exit(1) from None


def _run_with_progress(job_id: str, cfg, factory, store, defaults) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from training_jobs.job import run_training_job

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("epoch {task.fields[epoch]:.2f}  loss {task.fields[loss]:.4f}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("steps", total=None, epoch=0.0, loss=float("nan"))

        def progress(step: int, total: int, epoch: float, loss: float) -> None:
            bar.update(task, completed=step, total=total, epoch=epoch, loss=loss)

        try:
            outcome = run_training_job(job_id, cfg, factory, store, progress, defaults=defaults, retry_failed=True,
                                       on_log=lambda line: bar.console.print(f"[dim]{line}[/dim]"))
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted: resume with `apa-fleet train --job {job_id}`[/yellow]")
            raise typer.Exit(130) from None
        except Exception as exc:  # the job row already says failed, with the error
            console.print(f"[red]training job {job_id} failed:[/red] {exc}")
            raise typer.Exit(1) from None
    if outcome is None:
        console.print(f"[yellow]job {job_id} is running in another process[/yellow]")
        raise typer.Exit(1)
    if outcome.status.value != "succeeded":
        console.print(f"[red]job {job_id}: {outcome.status.value}[/red]")
        raise typer.Exit(1)
    gate = outcome.metrics.get("gate", {})
    console.print(f"{outcome.metrics.get('engine', 'qwen2-audio')} version {outcome.adapter_version}: "
                  + ("[green]promoted to active[/green]" if outcome.promoted else "kept as candidate")
                  + f" ({gate.get('reason', '')})")
