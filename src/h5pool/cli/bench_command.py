"""``h5pool bench``: every strategy on the same rows, a table, JSON and a chart."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
from typing import TYPE_CHECKING, Any

import h5py

from h5pool.bench import synthetic
from h5pool.cli.common import UsageError, check_output, write
from h5pool.index.listing import expand_files
from h5pool.pool.remote import Filesystems
from h5pool.progress import progress_bar

if TYPE_CHECKING:
    from h5pool.bench.common import Result


def run_bench_command(args: argparse.Namespace) -> int:
    # These import torch: only when the command runs, never for --help.
    from h5pool.bench import common, loaders, run

    check_output(args.json, "--json")
    check_output(args.plot, "--plot")
    if args.plot:
        _require_matplotlib()
    with contextlib.ExitStack() as stack:
        files: list[str]
        if args.paths:
            files = expand_files(args.paths, Filesystems(args.storage_options))
            corpus_text = f"{len(files):,} files given, key {args.key!r}"
        else:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="h5pool-bench-"))
            files = synthetic.make_corpus(
                folder,
                args.files,
                args.rows,
                args.width,
                key=args.key,
                progress=True,
                storage=args.storage,
            )
            if args.storage == "images":
                args.key = "image" if args.key == "data" else args.key
                corpus_text = (
                    f"synthetic images: {args.files:,} files x {args.rows} uint8 (64, 64, 3), "
                    "one per gzip chunk"
                )
            else:
                stored = "contiguous" if args.storage == "contiguous" else "gzip 4 + shuffle"
                corpus_text = (
                    f"synthetic: {args.files:,} files x {args.rows} rows x {args.width} float32 "
                    f"({args.width * 4:,} B/row, {stored})"
                )
        limit = stack.enter_context(common.lowered_fd_limit(args.fd_limit or None))
        bar = stack.enter_context(
            progress_bar(total=len(args.strategies), desc="benchmarking", unit="strategy")
        )

        started: list[str] = []

        def progress(name: str) -> None:
            if started:
                bar.update(1)
            started.append(name)
            bar.set_postfix_str(name)

        config = common.BenchConfig(
            files=files,
            key=args.key,
            pool_size=args.pool,
            slow_samples=args.samples,
            fast_samples=args.fast_samples,
            loader_workers=args.workers,
            strategies=args.strategies,
            storage_options=args.storage_options,
            progress=progress,
        )
        results = run.run(config)
        bar.update(1)
    report = bench_report(results, corpus_text, limit)
    report["recommendation"] = loaders.recommendation(results, args.workers)
    write(format_table(report))
    if report["recommendation"]:
        write(report["recommendation"])
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
    if args.plot:
        draw_plot(report, args.plot)
    return 0


def machine_text() -> str:
    return (
        f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
        f"h5py {h5py.version.version}, HDF5 {h5py.version.hdf5_version}"
    )


def bench_report(results: list[Result], corpus_text: str, limit: int) -> dict[str, Any]:
    from h5pool.bench.run import floor_of, ratios  # imports torch, as the command has

    table = ratios(results)
    rows = []
    for result in results:
        row = result.as_dict()
        row.update(table[result.strategy])
        rows.append(row)
    return {
        "corpus": corpus_text,
        "fd_limit": limit,
        "machine": machine_text(),
        "floor": floor_of(results),
        "results": rows,
    }


def _number(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


#: What the columns and notes of the table mean, printed under it when they appear.
FOOTNOTES = {
    "raw-pread": "vs raw-pread: the cost against os.pread of the same bytes, "
    "descriptors opened once per visit (the floor of any reader)",
    "raw-decode": "vs raw-decode: the cost against a Python loop of pread and decode of "
    "each chunk once (the floor for compressed data)",
    "waited": "waited N%: the share of the Loader loop spent waiting for the next batch; "
    "the loop here does no training, so near 100% is expected and lower means reading "
    "keeps ahead of it",
}


def format_table(report: dict[str, Any]) -> str:
    floor = report.get("floor")
    header = [
        "strategy",
        "µs/sample",
        "samples/s",
        "vs open-per-sample",
        f"vs {floor}" if floor else "vs raw read",
        "peak open",
        "note",
    ]
    lines = [
        [
            row["strategy"],
            _number(row["us_per_sample"], ",.1f"),
            _number(row["samples_per_s"], ",.0f"),
            _number(row["speedup_vs_open_per_sample"], ".1f", "x faster"),
            _number(row["cost_vs_raw_pread"], ".1f", "x cost"),
            _number(row["peak_open"], ",d"),
            row["note"],
        ]
        for row in report["results"]
    ]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    aligned = [
        "  ".join(
            str(cell).ljust(widths[i]) if i in (0, 6) else str(cell).rjust(widths[i])
            for i, cell in enumerate(line)
        ).rstrip()
        for line in [header, *lines]
    ]
    aligned.insert(1, "  ".join("-" * w for w in widths))
    intro = [
        f"corpus: {report['corpus']}",
        f"fd limit (soft RLIMIT_NOFILE): {report['fd_limit']}",
        f"machine: {report['machine']}",
        "",
    ]
    notes = [FOOTNOTES[floor]] if floor in FOOTNOTES else []
    if any("waited" in str(row["note"]) for row in report["results"]):
        notes.append(FOOTNOTES["waited"])
    return "\n".join(intro + aligned + ["", *notes] if notes else intro + aligned)


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise UsageError('--plot needs matplotlib: pip install "h5pool[plot]"') from exc


def draw_plot(report: dict[str, Any], path: str) -> list[str]:
    """Draw the bar chart, coloured by kind; the legend's labels, for the record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = [r for r in report["results"] if r["samples_per_s"]]
    names = [r["strategy"] for r in rows]
    rates = [r["samples_per_s"] for r in rows]
    kinds = [plot_kind(name) for name in names]
    figure, axes = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    axes.barh(names, rates, color=[PLOT_KINDS[kind] for kind in kinds])
    shown = [kind for kind in PLOT_KINDS if kind in kinds]
    axes.legend(
        handles=[Patch(color=PLOT_KINDS[kind], label=kind) for kind in shown],
        loc="lower right",
        fontsize=8,
    )
    axes.set_xscale("log")
    axes.invert_yaxis()
    axes.set_xlabel("samples per second (log scale)")
    axes.set_title(f"h5pool bench: {report['corpus']}", fontsize=9)
    for y, rate in enumerate(rates):
        axes.text(rate, y, f" {rate:,.0f}", va="center", fontsize=8)
    failed = [r for r in report["results"] if not r["samples_per_s"]]
    if failed:
        axes.text(
            0.99,
            0.01,
            "; ".join(f"{r['strategy']}: {r['note']}" for r in failed),
            transform=axes.transAxes,
            ha="right",
            va="bottom",
            fontsize=7,
            color="#c44e52",
        )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return shown


#: The plot's colours and the legend's words for them.
PLOT_KINDS = {
    "h5pool": "#4c72b0",
    "naive recipes": "#c44e52",
    "references (raw floors, h5py kept open, in memory)": "#8c8c8c",
}


def plot_kind(strategy: str) -> str:
    if strategy in ("open-per-sample", "open-all"):
        return "naive recipes"
    if strategy in ("raw-pread", "pread-loop", "raw-decode", "h5py-kept-open", "loader-memory"):
        return "references (raw floors, h5py kept open, in memory)"
    return "h5pool"
