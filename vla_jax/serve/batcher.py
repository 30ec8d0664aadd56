"""Dynamic batching: requests that arrive within ``max_wait_ms`` of the oldest waiting one go into one model call.

Up to ``max_batch`` examples are stacked; with ``pad_sizes`` the batch is padded (repeating its first example) to
the smallest of those sizes that holds it, so a compiled program exists per size and nothing recompiles. Each
request carries its own noise [H, A], so its answer does not depend on what it was batched with. One model call
runs at a time, on a worker thread; the event loop keeps receiving and preprocessing meanwhile. ``senders``
(the number of open connections; each has at most one request in flight) ends the wait as soon as every
possible request is in.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import time
from typing import Callable

import numpy as np


def pad_sizes(max_batch: int) -> tuple[int, ...]:
    """Powers of two below ``max_batch``, then ``max_batch``: 8 -> (1, 2, 4, 8), 6 -> (1, 2, 4, 6)."""
    sizes = [1 << k for k in range(max_batch.bit_length()) if 1 << k < max_batch]
    return tuple(sizes + [max_batch])


@dataclasses.dataclass
class Job:
    example: dict[str, np.ndarray]  # one example, no batch axis
    noise: np.ndarray  # [H, A]
    future: asyncio.Future
    arrived: float  # time.perf_counter()


class Batcher:
    """``await batcher.submit(example, noise)`` -> (normalized actions [H, A], timing dict); :meth:`run` is the
    batching loop (one task per server)."""

    def __init__(self, run: Callable[[dict, np.ndarray], np.ndarray], max_batch: int = 8, max_wait_ms: float = 5.0,
                 pad: bool = False, senders: Callable[[], int] | None = None):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch={max_batch} must be >= 1 and max_wait_ms={max_wait_ms} >= 0")
        self._run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000.0
        self.sizes = pad_sizes(max_batch) if pad else None
        self._senders = senders
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model")
        self.batch_sizes: collections.Counter = collections.Counter()  # real examples per model call

    async def submit(self, example: dict[str, np.ndarray], noise: np.ndarray) -> tuple[np.ndarray, dict]:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(Job(example, noise, future, time.perf_counter()))
        return await future

    async def _collect(self) -> list[Job]:
        jobs = [await self._queue.get()]
        deadline = jobs[0].arrived + self.max_wait
        while len(jobs) < self.max_batch:
            if not self._queue.empty():
                jobs.append(self._queue.get_nowait())
                continue
            left = deadline - time.perf_counter()
            if left <= 0 or (self._senders is not None and len(jobs) >= self._senders()):
                break
            try:
                jobs.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return jobs

    def _call(self, jobs: list[Job]) -> tuple[np.ndarray, float, int]:
        n = len(jobs)
        size = next(s for s in self.sizes if s >= n) if self.sizes else n
        rows = [j.example for j in jobs] + [jobs[0].example] * (size - n)
        obs = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
        noise = np.stack([j.noise for j in jobs] + [jobs[0].noise] * (size - n))
        t0 = time.perf_counter()
        actions = np.asarray(self._run(obs, noise), np.float32)
        return actions[:n], (time.perf_counter() - t0) * 1000.0, size

    async def run(self) -> None:
        """Forever: collect a batch, run it on the worker thread, answer every job (or fail them all)."""
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            started = time.perf_counter()
            try:
                actions, infer_ms, size = await loop.run_in_executor(self._worker, self._call, jobs)
            except Exception as e:  # noqa: BLE001 - every waiting client gets the error, the loop goes on
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            self.batch_sizes[len(jobs)] += 1
            for job, row in zip(jobs, actions):
                if not job.future.done():
                    timing = {"infer_ms": infer_ms, "queue_ms": (started - job.arrived) * 1000.0,
                              "batch_size": len(jobs), "padded_batch_size": size}
                    job.future.set_result((row, timing))

    def close(self) -> None:
        self._worker.shutdown(wait=True)
