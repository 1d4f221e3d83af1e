"""Figures of one Loader epoch, summed over reading threads and worker processes.

Why: a pool's counters live in the process that reads, so after an epoch with
workers the parent's ``ds.pool.stats()`` shows nothing of what they did.  Each
worker sends its cumulative counters with every batch; the epoch's figure is
the sum, over processes, of the last report minus the report before the epoch.
The wait fraction tells at a glance whether loading is the bottleneck.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import torch

COUNTERS = ("file_opens", "hits", "misses", "evictions", "chunks_decoded")


def process_counters(dataset: Any) -> dict[str, int]:
    """This process's cumulative counters for ``dataset`` (pool and decoded chunks)."""
    pool = dataset.pool.stats()
    engine = dataset._engine
    return {
        "file_opens": pool.hdf5_opens + pool.raw_opens,
        "hits": pool.hits,
        "misses": pool.misses,
        "evictions": pool.evictions,
        "chunks_decoded": engine.chunks.decoded if engine is not None else 0,
        "peak_open_files": pool.peak_open_files,
    }


class EpochStats:
    """Thread-safe accumulation of one epoch's figures."""

    def __init__(self, baselines: dict[int, dict[str, int]] | None = None) -> None:
        self._lock = threading.Lock()
        self._started = time.perf_counter()
        self.samples = self.batches = self.bytes = 0
        self.wait_seconds = self.consumer_seconds = 0.0
        self._baselines: dict[int, dict[str, int]] = dict(baselines or {})
        self.latest: dict[int, dict[str, int]] = {}

    def count(self, samples: int, batch: dict[str, Any] | None, nbytes: int = 0) -> None:
        if batch is not None:
            nbytes += sum(v.nbytes for v in batch.values() if isinstance(v, torch.Tensor))
        with self._lock:
            self.samples += samples
            self.batches += 1
            self.bytes += nbytes

    def waited(self, seconds: float) -> None:
        self.wait_seconds += seconds

    def consumed(self, seconds: float) -> None:
        self.consumer_seconds += seconds

    def add_process(self, pid: int, before: dict[str, int] | None, after: dict[str, int]) -> None:
        with self._lock:
            if pid not in self._baselines:
                self._baselines[pid] = before or dict.fromkeys(after, 0)
            self.latest[pid] = after

    def follow_this_process(self, before: dict[str, int], current: Any) -> None:
        """Read this process's counters (``current()``) when figures are asked for,
        not after every batch: that kept the loop's thread busy beside the readers."""
        with self._lock:
            self._baselines.setdefault(os.getpid(), before)
            self._current = current

    def as_dict(self) -> dict[str, Any]:
        current = getattr(self, "_current", None)
        if current is not None:
            self.add_process(os.getpid(), None, current())
        with self._lock:
            totals = dict.fromkeys(COUNTERS, 0)
            peak = 0
            for pid, after in self.latest.items():
                base = self._baselines.get(pid, {})
                for name in COUNTERS:
                    totals[name] += after.get(name, 0) - base.get(name, 0)
                peak = max(peak, after.get("peak_open_files", 0))
            seconds = time.perf_counter() - self._started
            busy = self.wait_seconds + self.consumer_seconds
            return {
                "samples": self.samples,
                "batches": self.batches,
                "bytes_read": self.bytes,
                **totals,
                "peak_open_files_per_process": peak,
                "processes": len(self.latest),
                "seconds": seconds,
                "samples_per_s": self.samples / seconds if seconds > 0 else 0.0,
                "wait_fraction": self.wait_seconds / busy if busy > 0 else 0.0,
            }
