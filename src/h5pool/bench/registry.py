"""The strategies of ``h5pool bench``, by name, and where the code of each lives.

A lazy registry, as fsspec's ``registry.py`` is: a name maps to the dotted path
of its function, which :func:`h5pool.bench.run.runner_of` imports only when
the strategy runs.  So the command line lists and checks strategy names without
importing torch, and the modules that run the strategies import
:mod:`h5pool.bench.common`, never each other.
"""

from __future__ import annotations

#: Every strategy, in the order ``h5pool bench`` runs and prints them.
KNOWN_STRATEGIES: dict[str, str] = {
    "open-per-sample": "h5pool.bench.recipes.open_per_sample",
    "open-all": "h5pool.bench.recipes.open_all",
    "pooled-random": "h5pool.bench.recipes.pooled_random",
    "pooled-hit": "h5pool.bench.recipes.pooled_hit",
    "pooled-block": "h5pool.bench.recipes.pooled_block",
    "pooled-batched": "h5pool.bench.recipes.pooled_batched",
    "pooled-read-batch": "h5pool.bench.chunked.pooled_read_batch",
    "h5py-kept-open": "h5pool.bench.chunked.h5py_kept_open",
    "raw-pread": "h5pool.bench.recipes.raw_pread",
    "pread-loop": "h5pool.bench.recipes.pread_loop",
    "raw-decode": "h5pool.bench.chunked.raw_decode",
    "loader-pooled": "h5pool.bench.loaders.loader_pooled",
    "loader-threads": "h5pool.bench.loaders.loader_threads",
    "loader-workers": "h5pool.bench.loaders.loader_workers",
    "loader-memory": "h5pool.bench.loaders.loader_memory",
}

#: The strategy names, in run order.
STRATEGIES = tuple(KNOWN_STRATEGIES)
