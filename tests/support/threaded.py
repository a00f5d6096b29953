"""Run an asyncio test peer (such as the OTLP receivers) in a thread of its own, for tests whose main
thread drives a real `sentinel` subprocess with blocking sockets."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run `coro` on the loop thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        """Call `fn` on the loop thread (to read state the loop owns) and return its result."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    def stop(self, cleanup: Callable[[], Awaitable[None]] | None = None) -> None:
        if cleanup is not None:
            self.run(_await(cleanup()))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def _await(awaitable: Awaitable[None]) -> None:
    await awaitable
