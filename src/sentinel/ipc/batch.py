"""Batches for the supervisor: what a worker produces per request (finished spans, access-log lines) is
appended to a list on the request path and sent as one frame per batch.

A frame goes to the control socket as a list of buffers (the stream's `writelines`, one `writev`), so
that a batch of spans is not copied into one buffer first: at a few hundred kilobytes per batch, those
copies and the page faults of their fresh allocations cost the worker more than encoding the spans.

A batch goes out when it holds `max_items` items or `max_bytes` bytes, and otherwise every
`FLUSH_INTERVAL` seconds (the worker's flush loop calls `flush`). If the supervisor falls behind (the
control socket's send buffer holds more than `MAX_PENDING_BYTES`), the batch is dropped and counted:
the request path never waits for the supervisor (SPEC §6.5, §7, §11).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Generic, TypeVar

from sentinel.ipc import frame_header

FLUSH_INTERVAL: Final = 0.2
MAX_PENDING_BYTES: Final = 8 * 1024 * 1024

T = TypeVar("T", bytes, str)


class FrameBatcher(Generic[T]):
    __slots__ = (
        "_count",
        "_items",
        "_kind",
        "_max_bytes",
        "_max_items",
        "_pack",
        "_send",
        "_send_buffer_size",
        "_size",
        "dropped",
    )

    def __init__(
        self,
        kind: int,
        pack: Callable[[list[T]], list[bytes]],
        send: Callable[[list[bytes]], None],
        send_buffer_size: Callable[[], int],
        max_items: int = 1 << 30,
        max_bytes: int = 1 << 30,
        count: Callable[[list[T]], int] = len,
    ) -> None:
        """`pack` turns a batch into the buffers that make the payload of one frame of type `kind` (it may
        return the batch's own list); `send` writes a frame, as a list of buffers, to the control socket;
        `send_buffer_size` says how much is still waiting there; `count` says how many records a dropped
        batch held (an item may hold several)."""
        self._kind = kind
        self._pack: Callable[[list[T]], list[bytes]] = pack
        self._send = send
        self._send_buffer_size = send_buffer_size
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._count: Callable[[list[T]], int] = count
        self._items: list[T] = []
        self._size = 0
        self.dropped = 0  # records dropped because the supervisor was behind

    def add(self, item: T) -> None:
        items = self._items
        items.append(item)
        self._size += len(item)
        if len(items) >= self._max_items or self._size >= self._max_bytes:
            self.flush()

    def flush(self) -> None:
        items = self._items
        if not items:
            return
        self._items = []
        self._size = 0
        if self._send_buffer_size() > MAX_PENDING_BYTES:
            self.dropped += self._count(items)
            return
        parts = self._pack(items)
        size = 0
        for part in parts:
            size += len(part)
        parts.insert(0, frame_header(self._kind, size))
        self._send(parts)
