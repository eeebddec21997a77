"""`apa-fleet worker`, `apa-fleet run`: the processes of the fleet.

In production each part starts on its own (gateway, `worker --queues score` on GPU nodes,
`worker --queues deliver --beat`, `worker --queues train`), pointed at Postgres, Redis and S3 by
configuration. `run` starts them all on this machine, which is what the embedded mode needs.
"""

from __future__ import annotations

import os
import signal
import socket
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
    node = f"{'-'.join(names)}@{socket.gethostname()}.{os.getpid()}"
    os.environ["APA_WORKER_NAME"] = node  # the pool children name their heartbeats with it
    os.environ["APA_WORKER_QUEUES"] = ",".join(names)
    from workers.celery_app import app

    argv = ["worker", "-Q", ",".join(names), "-c", str(concurrency), "-l", loglevel, "--without-gossip",
            "--without-mingle", "-n", node]
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
        if cfg.uses_tiny_model:
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


def worker_health(
    queues: Annotated[str, typer.Option(help="Only the workers on exactly these queues (comma-separated).")] = "",
) -> None:
    """Liveness probe for a worker pod: exit 0 when a pool process of this machine's worker is
    healthy (fresh heartbeat, model loaded or still loading within APA_WORKER_LOAD_TIMEOUT_S),
    1 otherwise. Reads only local heartbeat files, so a database outage does not restart workers."""
    from datetime import datetime, timezone

    from fleet.worker_health import judge, read_beat_files

    cfg = settings()
    folder = cfg.effective_heartbeat_dir
    wanted = ",".join(q.strip() for q in queues.split(",") if q.strip()) or None
    beats = read_beat_files(folder, wanted)
    if not beats:
        typer.echo(f"unhealthy: no worker heartbeat in {folder}" + (f" for queues {wanted}" if wanted else ""))
        raise typer.Exit(1)
    now = datetime.now(timezone.utc)
    healthy = False
    for beat in beats:
        ok, reason = judge(beat, now, stale_after_s=cfg.worker_stale_after_s, load_timeout_s=cfg.worker_load_timeout_s)
        healthy |= ok
        typer.echo(f"{beat.id} [{beat.queues}] pid {beat.pid}: {'healthy' if ok else 'unhealthy'}: {reason}")
    raise typer.Exit(0 if healthy else 1)
