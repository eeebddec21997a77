"""`apa-fleet run` as `docker stop`, systemd and Ctrl-C meet it: a taken port fails at once, a
signal stops every process it started, and a child that dies stops `run` with a non-zero code."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.proc_tree import alive, descendants


def _env(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APA_")}
    env.update({"APA_GATEWAY_PORT": str(port), "HF_HUB_OFFLINE": "1", "COLUMNS": "80",
                "PYTHONPATH": str(ROOT)})
    return env


def test_taken_port_fails_in_seconds_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "cli.main", "run"], cwd=tmp_path, env=_env(port),
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    # The check runs before anything starts (it was a 120 s wait for a gateway that never came): no
    # child, no state. Its speed is a benchmark figure, not a timed assertion on a shared CI box.
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "APA_GATEWAY_PORT" in lines[0], proc.stderr
    assert not (tmp_path / "var").exists()  # nothing started, nothing created


def _start_run(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "run.log"
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "run", "--no-demo"], cwd=tmp_path,
                            env=_env(free_port()), stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while "apa-fleet is up" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(log.read_text(errors="replace")[-4000:])
        time.sleep(0.5)
    # The three workers are up too (each logs `ready`) before we count the processes to stop.
    while log.read_text(errors="replace").count(" ready.") < 3:
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
        time.sleep(0.5)
    return proc, log


@contextmanager
def _killed_on_failure(proc: subprocess.Popen, started: set[int]) -> Iterator[None]:
    """A run that does not stop in time must not outlive its test (it would load the rest of the suite)."""
    try:
        yield
    except BaseException:
        for pid in (proc.pid, *started):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        raise


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_every_child(tmp_path: Path, sig: signal.Signals) -> None:
    proc, log = _start_run(tmp_path)
    started = descendants(proc.pid)
    assert len(started) >= 4  # gateway, three workers (and their pool children, beat)
    text = log.read_text(errors="replace")
    assert f"state in {tmp_path / 'var'} (APA_VAR_DIR)" in text.replace("\n", " ")
    # Noise a newcomer reads as errors (the root warning shows when the tests run as root).
    assert "No hostname was supplied" not in text and "superuser privileges" not in text
    proc.send_signal(sig)
    with _killed_on_failure(proc, started):
        proc.wait(60)
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]
    deadline = time.monotonic() + 10
    while any(alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [p for p in started if alive(p)] == []


@pytest.mark.slow
def test_a_dead_child_stops_run_with_an_error(tmp_path: Path) -> None:
    proc, log = _start_run(tmp_path)
    started = descendants(proc.pid)
    gateway = next(p for p in started
                   if Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[3:4] == [b"gateway"])
    os.kill(gateway, signal.SIGKILL)
    with _killed_on_failure(proc, started):
        proc.wait(60)
    assert proc.returncode == 1
    assert "the gateway process was killed by signal 9" in log.read_text(errors="replace")
    deadline = time.monotonic() + 10
    while any(alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [p for p in started if alive(p)] == []


def test_gateway_alone_on_a_taken_port_names_the_setting(tmp_path: Path) -> None:
    env = _env(0)
    subprocess.run([sys.executable, "-m", "cli.main", "db", "upgrade"], cwd=tmp_path, env=env,
                   check=True, capture_output=True, timeout=120)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "cli.main", "gateway"], cwd=tmp_path,
                              env=_env(port), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and f"port {port}" in proc.stderr
    assert "APA_GATEWAY_PORT" in proc.stderr and "Traceback" not in proc.stderr
