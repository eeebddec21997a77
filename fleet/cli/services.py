"""`apa-fleet worker`, `apa-fleet run`: the processes of the fleet.

In production each part starts on its own (gateway, `worker --queues score` on GPU nodes,
`worker --queues deliver --beat`, `worker --queues train`), pointed at Postgres, Redis and S3 by
configuration. `run` starts them all on this machine, which is what the embedded mode needs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Annotated

import typer
from rich.console import Console

from fleet.cli.context import checked_settings, settings

console = Console()


def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated: score, deliver, train.")] = "score",
    concurrency: Annotated[int, typer.Option(help="Worker processes (1 per GPU for score; train is always 1).")] = 1,
    beat: Annotated[bool, typer.Option(help="Also run the periodic tasks (sweeper, callbacks) in this worker.")] = False,
    loglevel: str = "INFO",
) -> None:
    """Run a Celery worker on the given queues."""
    checked_settings()
    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = set(names) - {"score", "deliver", "train"}
    if unknown:
        console.print(f"[red]error:[/red] unknown queue(s) {sorted(unknown)}")
        raise typer.Exit(2)
    if "train" in names:
        concurrency = 1
    if "score" in names:
        os.environ["APA_WORKER_PRELOAD_MODEL"] = "1"
    from workers.celery_app import app

    argv = ["worker", "-Q", ",".join(names), "-c", str(concurrency), "-l", loglevel, "--without-gossip",
            "--without-mingle", "-n", f"{'-'.join(names)}@%h.{os.getpid()}"]
    if beat:
        schedule = settings().var_dir.resolve() / "celerybeat-schedule"
        schedule.parent.mkdir(parents=True, exist_ok=True)
        argv += ["-B", "-s", str(schedule)]
    app.worker_main(argv)


def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fleet.cli.main", *args], env=os.environ.copy())


def run(
    demo: Annotated[bool, typer.Option(help="Submit the demo recordings once everything is up.")] = True,
    exit_after_demo: Annotated[bool, typer.Option(help="Stop everything after the demo (for scripts).")] = False,
) -> None:
    """Gateway, score worker, delivery worker + beat and training worker together, on this machine."""
    from fleet.migrate import upgrade

    cfg = checked_settings()
    upgrade(cfg.effective_database_url)
    procs = [
        _spawn(["gateway"]),
        _spawn(["worker", "--queues", "score"]),
        _spawn(["worker", "--queues", "deliver", "--beat"]),
        _spawn(["worker", "--queues", "train"]),
    ]
    code = 0
    try:
        from fleet.cli.demo import run_demo, wait_ready

        wait_ready(cfg.public_base_url, timeout_s=120)
        console.print(f"[green]apa-fleet is up[/green]: gateway {cfg.public_base_url} (docs at /docs)")
        if cfg.scores_are_tiny:
            console.print("[yellow]Scoring with the tiny random model: its scores mean nothing. "
                          "Set APA_MODEL_PATH to Qwen2-Audio weights for real scores.[/yellow]")
        if demo:
            code = run_demo(cfg)
        if exit_after_demo:
            return
        console.print("Ctrl-C stops all processes.")
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        code = 1
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    raise typer.Exit(code)
