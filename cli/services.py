"""`apa-fleet worker`, `apa-fleet beat`, `apa-fleet run`: the processes of the fleet.

In production each part starts on its own (gateway, `worker --queues score` on GPU nodes,
`worker --queues deliver`, `worker --queues train`, exactly one `beat`), pointed at Postgres,
Redis and S3 by configuration. `run` starts them all on this machine, which is what the embedded
mode needs.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fleet.checks import ConfigError, fail
from cli.context import checked_settings, settings
from cli.ports import check_port_free
from cli.schema import shown_url
from cli.supervise import ChildExited, StopRequested, Supervisor, signals_ignored, stop_on_signals
from fleet.settings import Settings

console = Console()


def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated: score, deliver, train.")] = "score",
    concurrency: Annotated[int, typer.Option(help="Worker processes (1 per GPU for score; train is always 1).")] = 1,
    beat: Annotated[bool, typer.Option(help="Also run the periodic tasks (sweeper, callbacks) in this worker.")] = False,
    loglevel: str = "INFO",
) -> None:
    """Run a Celery worker on the given queues."""
    checked_settings(schema=True)
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
    from celery.exceptions import SecurityWarning

    from workers.celery_app import app

    # Celery's multi-line warning about running as root (usual in containers) is aimed at pickle;
    # this app accepts JSON only, so a newcomer would read it as an error for nothing.
    warnings.filterwarnings("ignore", category=SecurityWarning)

    argv = ["worker", "-Q", ",".join(names), "-c", str(concurrency), "-l", loglevel, "--without-gossip",
            "--without-mingle", "-n", node]
    if beat:
        schedule = settings().var_dir.resolve() / "celerybeat-schedule"
        schedule.parent.mkdir(parents=True, exist_ok=True)
        argv += ["-B", "-s", str(schedule)]
    app.worker_main(argv)


def beat(
    schedule_file: Annotated[Path | None, typer.Option(
        help="Where beat keeps its last-run times (default var_dir/celerybeat-schedule).")] = None,
    loglevel: str = "INFO",
) -> None:
    """Run only the periodic tasks (sweeper, due callbacks, batch discovery): exactly one per fleet.

    Beat publishes tasks by name and needs the broker alone, so it runs as its own single-replica
    process instead of inside a worker (`worker --beat` in every deliver replica would schedule each
    task once per replica).
    """
    cfg = settings()
    from fleet.queue import make_celery

    schedule = (schedule_file or cfg.var_dir / "celerybeat-schedule").resolve()
    schedule.parent.mkdir(parents=True, exist_ok=True)
    make_celery(cfg).Beat(schedule=str(schedule), loglevel=loglevel).run()



def _child_argv(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args]


def _announce_state(cfg: Settings) -> None:
    """Say where the embedded state lives: a newcomer should know which folder holds their data."""
    from fleet.queue import broker_folder

    parts = [f"database {shown_url(cfg.effective_database_url)}"]
    if cfg.storage_backend == "local":
        parts.append(f"objects {cfg.effective_storage_root}")
    if cfg.broker_url.startswith("filesystem:"):
        parts.append(f"broker {broker_folder(cfg)}")
    console.print(f"state in {cfg.var_dir.resolve()} (APA_VAR_DIR): " + ", ".join(parts), highlight=False,
                  soft_wrap=True)


def _wait_gateway(base_url: str, fleet: Supervisor, timeout_s: float) -> None:
    """Until the gateway answers /healthz; stops early if any child dies meanwhile."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fleet.check()
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"the gateway at {base_url} (APA_PUBLIC_BASE_URL) did not answer within {timeout_s:.0f}s")


def run(
    demo: Annotated[bool, typer.Option(help="Submit the demo recordings once everything is up.")] = True,
    exit_after_demo: Annotated[bool, typer.Option(help="Stop everything after the demo (for scripts).")] = False,
) -> None:
    """Gateway, score worker, delivery worker + beat and training worker together, on this machine.

    Stops all of them on Ctrl-C, SIGTERM or SIGHUP; if one of them dies, stops the rest and exits 1.
    """
    from migrations.runner import upgrade

    cfg = settings()
    try:  # first, so a taken port costs a second instead of a start-up timeout
        check_port_free(cfg.gateway_host, cfg.gateway_port)
    except ConfigError as exc:
        fail(exc)
    cfg = checked_settings()
    _announce_state(cfg)
    upgrade(cfg.effective_database_url)
    fleet = Supervisor()
    code = 0
    with stop_on_signals():
        try:
            fleet.start("gateway", _child_argv(["gateway"]))
            fleet.start("score worker", _child_argv(["worker", "--queues", "score"]))
            fleet.start("deliver worker", _child_argv(["worker", "--queues", "deliver", "--beat"]))
            fleet.start("train worker", _child_argv(["worker", "--queues", "train"]))
            _wait_gateway(cfg.public_base_url, fleet, timeout_s=120)
            console.print(f"[green]apa-fleet is up[/green]: gateway {cfg.public_base_url} (docs at /docs)")
            if cfg.scores_are_tiny:
                console.print("[yellow]Scoring with the tiny random model: its scores mean nothing. "
                              "Set APA_MODEL_PATH to Qwen2-Audio weights for real scores.[/yellow]")
            if demo:
                from cli.demo import run_demo

                code = run_demo(cfg, check=fleet.check)
            if not exit_after_demo:
                console.print("Ctrl-C stops all processes.")
                while True:
                    fleet.check()
                    time.sleep(0.5)
        except ChildExited as exc:
            console.print(f"[red]apa-fleet run:[/red] {exc}", highlight=False, soft_wrap=True)
            code = 1
        except TimeoutError as exc:
            console.print(f"[red]apa-fleet run:[/red] {exc}", highlight=False, soft_wrap=True)
            code = 1
        except (KeyboardInterrupt, StopRequested):
            console.print("stopping all processes ...")
            code = 0  # a requested stop is a clean exit
        finally:
            with signals_ignored():
                fleet.stop()
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
