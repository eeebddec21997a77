"""The embedded broker: kombu's filesystem transport with atomic writes.

kombu's own filesystem transport creates a message file under its final `*.msg` name and only
then writes the body (its `flock` is advisory: the reader never takes it). A consumer polling the
folder can rename and read the file in between, get zero or half the bytes, and crash with
`JSONDecodeError`; the message is lost too, because the reader deletes the file it failed to parse.
The exchange tables in the control folder have the same window (`open("wb")` truncates before the
lock is taken).

Here every file is written under a hidden name and renamed into place (`os.replace` is atomic
within a folder), so a reader sees a whole message or none. A consumer claims a message by renaming
it into the processed folder (same file system: exactly one consumer wins, never a copy), and the
exchange tables are rewritten whole under a lock file. Selected by `fleet.queue.make_celery`
for `filesystem://` broker URLs; the on-disk layout is kombu's, so queue depth probes still work.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from time import monotonic
from typing import Any

from kombu.transport import filesystem
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

TRANSPORT_PATH = "fleet.fs_broker:Transport"


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that no reader ever sees a partial file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        try:
            write_atomically(Path(self.data_folder_out) / name, str_to_bytes(dumps(payload)))
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add message {name!r} to {self.data_folder_out}") from exc

    def _get(self, queue: str) -> Any:
        wanted = f"{queue}.msg"
        processed = Path(self.processed_folder)
        processed.mkdir(parents=True, exist_ok=True)
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.startswith(".") or name.partition(".")[2] != wanted:
                continue
            claimed = processed / name
            try:
                # Same file system: an atomic rename, so exactly one consumer gets the message.
                os.rename(os.path.join(self.data_folder_in, name), claimed)
            except OSError:
                continue  # another consumer took it
            try:
                payload = claimed.read_bytes()
                if not self.store_processed:
                    claimed.unlink()
            except OSError as exc:
                raise filesystem.ChannelError(f"Cannot read message {claimed}") from exc
            return loads(bytes_to_str(payload))
        raise Empty()

    # Exchange tables: read whole files, rewrite whole files under a lock file.

    def get_table(self, exchange: str) -> list:
        file = self._exchange_file(exchange)
        try:
            return [filesystem.exchange_queue_t(*q) for q in loads(bytes_to_str(file.read_bytes()))]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot open {file}") from exc

    def _update_table(self, exchange: str, change) -> None:
        file = self._exchange_file(exchange)
        self.control_folder.mkdir(parents=True, exist_ok=True)
        with open(file.with_name(f".{file.name}.lock"), "ab") as lock_file:
            filesystem.lock(lock_file, filesystem.LOCK_EX)
            try:
                queues = self.get_table(exchange)
                updated = change(list(queues))
                if updated != queues:
                    write_atomically(file, str_to_bytes(dumps(updated)))
            finally:
                filesystem.unlock(lock_file)

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        value = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._update_table(exchange, lambda queues: queues if value in queues else [value, *queues])

    def _delete(self, queue, exchange, routing_key, pattern, *args, **kwargs) -> None:
        # The virtual base class forgets the queue; kombu's filesystem override then edits the table.
        super(filesystem.Channel, self)._delete(queue, exchange, routing_key, pattern, *args, **kwargs)
        value = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._update_table(exchange, lambda queues: [q for q in queues if q != value])


class Transport(filesystem.Transport):
    """kombu's filesystem transport with the atomic Channel above; no host to name."""

    Channel = Channel
    # The base class names 'localhost', which makes kombu warn "No hostname was supplied".
    default_connection_params: dict = {}

