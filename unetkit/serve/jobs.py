"""A bounded job queue: predictions run on worker threads, at most ``capacity`` waiting or running.

A request takes its slot (:meth:`BoundedQueue.slot`) before its upload is received, so a burst
beyond the capacity is refused at once (:class:`QueueFull`, HTTP 503 with ``Retry-After``), its
bodies unread, instead of piling uploads and decoded images up in memory and on disk.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator


class QueueFull(RuntimeError):
    """Raised by :meth:`BoundedQueue.run` when ``capacity`` jobs are already waiting or running."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the prediction queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class BoundedQueue:
    """Run blocking jobs on ``workers`` threads with at most ``capacity`` admitted at once.

    A slot counts from admission until its job finishes (or is cancelled before it starts), so a
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
        """Requests admitted and not finished (receiving their upload, waiting or running)."""
        return self._pending

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the mean job time times the jobs ahead per worker."""
        return max(1, math.ceil(self._mean_seconds * self._pending / self.workers))

    def _release(self, *_: Any) -> None:
        with self._lock:
            self._pending -= 1

    def _timed(self, fn: Callable[..., Any], args: tuple) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * (time.perf_counter() - start)

    def _submit(self, fn: Callable[..., Any], args: tuple) -> Future:
        """Start ``fn(*args)`` on a worker; its slot is released when it finishes or is cancelled."""
        future = self._executor.submit(self._timed, fn, args)
        future.add_done_callback(self._release)
        return future

    @contextmanager
    def slot(self) -> Iterator[Slot]:
        """Take a slot for the block (raise :class:`QueueFull` when none is free): what the block does
        before its job (receiving the upload) counts against the capacity too. The slot is freed when
        the block ends without a job, else when the job given to :meth:`Slot.run` finishes."""
        with self._lock:
            if self._pending >= self.capacity:
                raise QueueFull(self.retry_after())
            self._pending += 1
        slot = Slot(self)
        try:
            yield slot
        finally:
            if not slot.submitted:
                self._release()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``await fn(*args)`` on a worker thread; raises :class:`QueueFull` when at capacity."""
        with self.slot() as slot:
            return await slot.run(fn, *args)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class Slot:
    """One admitted request of a :class:`BoundedQueue`: runs its one job, which keeps the slot."""

    def __init__(self, queue: BoundedQueue) -> None:
        self._queue = queue
        self.submitted = False

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``await fn(*args)`` on a worker thread of the queue; the slot is freed when it finishes."""
        if self.submitted:
            raise RuntimeError("a queue slot runs one job")
        future = self._queue._submit(fn, args)
        self.submitted = True
        return await asyncio.wrap_future(future)
