"""The gateway's per-process listening sockets (cli/reuse_port.py)."""

from __future__ import annotations

import pickle
import socket

import pytest

from cli.reuse_port import STARTUP_FAILURE, SUPPORTED, ReusePortListener
from tests.conftest import free_port

pytestmark = pytest.mark.skipif(not SUPPORTED, reason="this platform has no SO_REUSEPORT")


def test_each_process_that_receives_the_listener_gets_its_own_socket_on_the_port() -> None:
    port = free_port()
    listener = ReusePortListener("127.0.0.1", port)
    first, second = pickle.loads(pickle.dumps(listener)), pickle.loads(pickle.dumps(listener))
    try:
        assert first.getsockname() == second.getsockname() == ("127.0.0.1", port)
        assert first.fileno() != second.fileno()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # both listen: a connection is accepted by the kernel on one of them
    finally:
        first.close()
        second.close()


def test_a_port_taken_without_reuse_ends_the_child_as_a_startup_failure() -> None:
    """uvicorn's supervisor stops on this exit code instead of restarting the child forever."""
    port = free_port()
    taken = socket.socket()
    taken.bind(("127.0.0.1", port))
    taken.listen()
    try:
        with pytest.raises(SystemExit) as exited:
            pickle.loads(pickle.dumps(ReusePortListener("127.0.0.1", port)))
        assert exited.value.code == STARTUP_FAILURE
    finally:
        taken.close()
