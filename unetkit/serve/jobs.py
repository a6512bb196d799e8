"""A bounded job queue: predictions run on worker threads, at most ``capacity`` waiting or running.

A burst of uploads beyond the capacity is refused at once (:class:`QueueFull`, HTTP 503 with
``Retry-After``) instead of piling decoded images up in memory.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class QueueFull(RuntimeError):
    """Raised by :meth:`BoundedQueue.run` when ``capacity`` jobs are already waiting or running."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the prediction queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class BoundedQueue:
    """Run blocking jobs on ``workers`` threads with at most ``capacity`` admitted at once.

    A job counts from admission until it finishes (or is cancelled before it starts), so a
    client that disconnects does not free its slot while its prediction still runs.
    """

    def __init__(self, capacity: int = 16, workers: int = 1) -> None:
        if capacity < 1 or workers < 1:
            raise ValueError(f"capacity and workers must be at least 1, got {capacity} and {workers}")
        self.capacity = capacity
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unetkit-predict")
        self._lock = threading.Lock()
        self._pending = 0
        self._mean_seconds = 1.0

    @property
    def pending(self) -> int:
        """Jobs admitted and not finished (waiting or running)."""
        return self._pending

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the mean job time times the jobs ahead per worker."""
        return max(1, math.ceil(self._mean_seconds * self._pending / self.workers))

    def _release(self, _: Future) -> None:
        with self._lock:
            self._pending -= 1

    def _timed(self, fn: Callable[..., Any], args: tuple) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * (time.perf_counter() - start)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``await fn(*args)`` on a worker thread; raises :class:`QueueFull` when at capacity."""
        with self._lock:
            if self._pending >= self.capacity:
                raise QueueFull(self.retry_after())
            self._pending += 1
        future = self._executor.submit(self._timed, fn, args)
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
