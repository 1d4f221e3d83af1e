"""Run the chosen strategies of ``h5pool bench`` on one corpus, and the ratios
between them.

The ``benchmarks/`` suite and ``h5pool bench`` both call :func:`run`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from h5pool.bench.common import BenchConfig, Corpus, Result
from h5pool.bench.registry import KNOWN_STRATEGIES, STRATEGIES


def run(config: BenchConfig) -> list[Result]:
    """Run the chosen strategies on one corpus, in the order of ``STRATEGIES``."""
    unknown = set(config.strategies) - set(STRATEGIES)
    if unknown:
        raise ValueError(f"unknown strategies: {sorted(unknown)}; choose from {list(STRATEGIES)}")
    corpus = Corpus(config)
    results = []
    for name in STRATEGIES:
        if name in config.strategies:
            config.progress(name)
            results.append(runner_of(name)(corpus))
    return results


def runner_of(name: str) -> Callable[[Corpus], Result]:
    """The function that runs strategy ``name``, imported on first use.

    Parameters
    ----------
    name
        One of :data:`~h5pool.bench.registry.STRATEGIES`.

    Returns
    -------
    Callable
        Takes the :class:`~h5pool.bench.common.Corpus` and returns its
        :class:`~h5pool.bench.common.Result`.

    Raises
    ------
    ValueError
        When ``name`` is not a known strategy.
    """
    try:
        dotted = KNOWN_STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose from {list(STRATEGIES)}") from None
    module, function = dotted.rsplit(".", 1)
    runner: Callable[[Corpus], Result] = getattr(importlib.import_module(module), function)
    return runner


def floor_of(results: Sequence[Result]) -> str | None:
    """The raw floor the costs are against: ``raw-pread`` where the data is
    contiguous, else ``raw-decode`` (pread and decode each chunk once)."""
    measured = {r.strategy for r in results if r.us_per_sample}
    return next((name for name in ("raw-pread", "raw-decode") if name in measured), None)


def ratios(results: Sequence[Result]) -> dict[str, dict[str, float | None]]:
    """Each strategy's speed-up against open-per-sample and its cost against the
    raw floor (:func:`floor_of`), kept under the name ``cost_vs_raw_pread``."""
    by_name = {r.strategy: r for r in results}

    def per_sample(name: str) -> float | None:
        result = by_name.get(name)
        return result.us_per_sample if result else None

    reference = floor_of(results)
    naive, floor, ceiling = (
        per_sample("open-per-sample"),
        per_sample(reference) if reference else None,
        per_sample("loader-memory"),
    )
    table: dict[str, dict[str, float | None]] = {}
    for result in results:
        cost = result.us_per_sample
        table[result.strategy] = {
            "speedup_vs_open_per_sample": naive / cost if naive and cost else None,
            "cost_vs_raw_pread": cost / floor if floor and cost else None,
            "rate_vs_in_memory": ceiling / cost if ceiling and cost else None,
        }
    return table
