"""The child processes of `apa-fleet run`: started in their own process groups, watched, stopped.

`run` is what `docker stop`, systemd and Ctrl-C talk to, so it owns the shutdown: each child leads
a process group (a Celery worker's pool children and beat, uvicorn) that `stop` signals as a whole,
SIGTERM first and SIGKILL after a grace period. On Linux each child also gets SIGTERM if `run`
itself dies without cleaning up (even by SIGKILL). A child that exits on its own is reported by
`exited()`, so `run` can stop the rest and fail instead of serving half a fleet.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

PR_SET_PDEATHSIG = 1


class StopRequested(Exception):
    """SIGTERM (or SIGHUP) reached `run`: stop everything and exit."""


class ChildExited(Exception):
    def __init__(self, name: str, code: int) -> None:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        super().__init__(f"the {name} process {how}; stopping the others (its output is above)")
        self.name, self.code = name, code


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: `stop` still does the work
        pass


@dataclass
class Child:
    name: str
    proc: subprocess.Popen


class Supervisor:
    """Starts named children in their own process groups and stops them all."""

    def __init__(self, grace_s: float = 15.0) -> None:
        self.grace_s = grace_s
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(argv, env=env if env is not None else os.environ.copy(),
                                start_new_session=True,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        self.children.append(Child(name, proc))
        return proc

    def check(self) -> None:
        """Raise ChildExited for the first child that is no longer running."""
        for child in self.children:
            code = child.proc.poll()
            if code is not None:
                raise ChildExited(child.name, code)

    def stop(self) -> None:
        """SIGTERM every child's process group, wait up to `grace_s`, then SIGKILL what is left."""
        for child in self.children:
            _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for child in self.children:
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for child in self.children:
            # Also reaches grandchildren that outlived their group leader.
            _signal_group(child.proc, signal.SIGKILL)
            try:
                child.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block SIGINT, SIGTERM and SIGHUP raise StopRequested.

    SIGINT too, explicitly: Python turns it into KeyboardInterrupt only when the process started with
    SIGINT at its default, and a shell that starts a program in the background (`cmd &` in a
    script, CI) starts it with SIGINT ignored, so `kill -INT` would do nothing."""

    def handler(signum: int, _frame: object) -> None:
        raise StopRequested(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """While stopping: a second Ctrl-C or SIGTERM must not cut the shutdown short."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in sigs}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
