"""Fetching a round's audio off the critical path.

A scoring job's time besides the model went mostly to waiting on the network: the claim (database
round trips) and then the GET of each claimed recording, one after the other (issue 10's queue
overhead). Two things overlap them:

- The score message carries the recording's URI as a hint, so the worker starts the GET of the
  named recording while it claims the row. The hint only saves time: the bytes are used only when
  the claimed row names the same s3:// URI (the row is the record; a local path means a different
  file per tenant, so it is never fetched ahead).
- A claimed batch's recordings are fetched and decoded on a small thread pool at once instead of
  one after the other.

A fetch in a thread raises what it would have raised inline, so bad input and outages end the same.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import TypeVar

from fleet.storage import InvalidObjectURI, ObjectStore, parse_uri

T = TypeVar("T")


def submit(executor: Executor | None, fn: Callable[..., T], *args) -> Future[T]:
    """`executor.submit`, or a call made now when there is no executor (a round run in-line)."""
    if executor is not None:
        return executor.submit(fn, *args)
    future: Future[T] = Future()
    try:
        future.set_result(fn(*args))
    except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the future, as a thread would
        future.set_exception(exc)
    return future


def prefetch(executor: Executor | None, store: ObjectStore, uri: str | None, *, max_bytes: int) -> Future[bytes] | None:
    """Start the GET of a hinted s3:// recording; None when there is nothing safe to start."""
    if executor is None or not uri:
        return None
    try:
        if parse_uri(uri).scheme != "s3" or store.backend != "s3":
            return None
    except InvalidObjectURI:
        return None  # the claim will fail the row with its own code
    return executor.submit(store.get, uri, max_bytes=max_bytes)
