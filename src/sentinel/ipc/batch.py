"""Batches for the supervisor: what a worker produces per request (finished spans, access-log lines) is
written into one buffer on the request path and sent as one frame per batch.

The buffer is a `librt.strings.BytesWriter` (mypyc's runtime library): compiled, writing into it is a C
call and a copy, so a span or a log line is written where it will be sent, without a bytes object of its
own, a list entry and a join at the flush. Callers write into `buffer` and then call `written` with the
number of records (spans, lines) they wrote, or hand over ready bytes with `add`.

A batch goes out when it holds `max_items` records or `max_bytes` bytes, and otherwise every
`FLUSH_INTERVAL` seconds (the worker's flush loop calls `flush`). If the supervisor falls behind (the
control socket's send buffer holds more than `MAX_PENDING_BYTES`), the batch is dropped and its records
counted: the request path never waits for the supervisor (SPEC §6.5, §7, §11).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from librt.strings import BytesWriter

from sentinel.ipc import frame_header

FLUSH_INTERVAL: Final = 0.2
MAX_PENDING_BYTES: Final = 8 * 1024 * 1024


class FrameBatcher:
    __slots__ = (
        "_kind",
        "_max_bytes",
        "_max_items",
        "_send",
        "_send_buffer_size",
        "buffer",
        "dropped",
        "items",
    )

    def __init__(
        self,
        kind: int | None,
        send: Callable[[list[bytes]], None],
        send_buffer_size: Callable[[], int],
        max_items: int = 1 << 30,
        max_bytes: int = 1 << 30,
    ) -> None:
        """`send` writes a frame of type `kind`, as a list of buffers, to the control socket (or, with
        `kind` None, the bare payload to a socket of its own); `send_buffer_size` says how much is still
        waiting there."""
        self._kind = kind
        self._send = send
        self._send_buffer_size = send_buffer_size
        self._max_items = max_items
        self._max_bytes = max_bytes
        self.buffer = BytesWriter()  # the batch's payload so far
        self.items = 0  # records in it
        self.dropped = 0  # records dropped because the supervisor was behind

    def add(self, data: bytes, items: int = 1) -> None:
        """Append `data`, which holds `items` records."""
        self.buffer.write(data)
        self.written(items)

    def written(self, items: int = 1) -> None:
        """`items` more records were written into `buffer`."""
        self.items += items
        if self.items >= self._max_items or len(self.buffer) >= self._max_bytes:
            self.flush()

    def flush(self) -> None:
        items = self.items
        if not items:
            return
        buffer = self.buffer
        payload = buffer.getvalue()
        buffer.truncate(0)
        self.items = 0
        if self._send_buffer_size() > MAX_PENDING_BYTES:
            self.dropped += items
            return
        kind = self._kind
        self._send([payload] if kind is None else [frame_header(kind, len(payload)), payload])
