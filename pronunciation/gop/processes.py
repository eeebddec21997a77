"""Process pools for the gop engine's parallel work (feature extraction, fitting the head).

Why not the platform default: on Linux a pool forks its workers from the calling process, and a
process that has already run torch or the boosting library holds OpenMP's thread pool, which does
not survive a fork: a forked worker that calls into OpenMP again can wait forever (seen as a test
run that hung in the head's parallel fit after other tests had used torch). Workers forked from a
fresh server process ("forkserver") start without those threads; they import what the submitted
functions need on first use, which costs seconds against fits that take minutes.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` processes started from a clean server process, not forked from this one."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
