"""`run`'s process supervision with real child processes (tiny Python programs, not the fleet)."""

from __future__ import annotations

import os
import sys
import time

import pytest

from cli.supervise import ChildExited, Supervisor
from tests.proc_tree import alive

# A child that starts a grandchild in its process group and reports the grandchild's pid.
PARENT_WITH_GRANDCHILD = (
    "import subprocess, sys, time\n"
    "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print(g.pid, flush=True)\n"
    "time.sleep(60)\n"
)
IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ok', flush=True); time.sleep(60)"


def _start(sup: Supervisor, name: str, code: str, tmp_path) -> tuple[int, str]:
    out = tmp_path / f"{name}.out"
    out.touch()
    proc = sup.start(name, [sys.executable, "-c", f"import sys; sys.stdout = open({str(out)!r}, 'w', buffering=1)\n{code}"])
    deadline = time.monotonic() + 20
    while not out.read_text().strip():
        assert time.monotonic() < deadline, f"{name} did not start"
        time.sleep(0.05)
    return proc.pid, out.read_text().strip()


def test_stop_ends_children_and_grandchildren(tmp_path) -> None:
    sup = Supervisor(grace_s=1.0)
    child, grandchild = _start(sup, "parent", PARENT_WITH_GRANDCHILD, tmp_path)
    stubborn, _ = _start(sup, "stubborn", IGNORES_SIGTERM, tmp_path)
    assert os.getpgid(child) == child != os.getpgid(0)  # its own group, not ours
    sup.check()  # all running
    t0 = time.monotonic()
    sup.stop()
    assert time.monotonic() - t0 < 10
    assert not alive(child) and not alive(int(grandchild)) and not alive(stubborn)


def test_a_child_that_exits_is_reported_by_name(tmp_path) -> None:
    sup = Supervisor(grace_s=1.0)
    _start(sup, "steady", "print('ok', flush=True); import time; time.sleep(60)", tmp_path)
    sup.start("flaky", [sys.executable, "-c", "raise SystemExit(3)"])
    deadline = time.monotonic() + 20
    with pytest.raises(ChildExited, match="the flaky process exited with code 3") as exc:
        while time.monotonic() < deadline:
            sup.check()
            time.sleep(0.05)
    assert exc.value.name == "flaky"
    sup.stop()
