"""The ``h5pool`` command line: ``bench``, ``info``, ``index`` and ``check``.

Exit codes: 0 success, 2 bad usage, 3 a problem with the data (the message
names the file), 4 the process ran out of file descriptors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from h5pool import __version__, synthetic
from h5pool.bench_names import STRATEGIES
from h5pool.byte_map import map_dataset
from h5pool.errors import CorpusError, DescriptorLimitError
from h5pool.file_scan import scan_file
from h5pool.pool import HandlePool
from h5pool.progress import progress_bar
from h5pool.remote import Filesystems
from h5pool.sources import expand_files

if TYPE_CHECKING:
    from h5pool.bench import Result

logger = logging.getLogger("h5pool.cli")

EXIT_USAGE, EXIT_DATA, EXIT_DESCRIPTORS = 2, 3, 4


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # h5pool's own messages at INFO (what index rescanned, skipped files);
    # other libraries (fsspec, botocore) stay at WARNING.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Prefixed())
    package_logger = logging.getLogger("h5pool")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    package_logger.propagate = False
    try:
        code: int = args.run(args)
        return code
    except CorpusError as exc:
        logger.error("%s", exc)
        return EXIT_DATA
    except DescriptorLimitError as exc:
        logger.error("%s", exc)
        return EXIT_DESCRIPTORS
    except UsageError as exc:
        parser.error(str(exc))  # exits with 2
        return EXIT_USAGE
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130
    except Exception as exc:  # never a traceback for a user: one line, and how to see more
        logger.debug("traceback", exc_info=True)
        logger.error(
            "unexpected %s: %s (please report it; H5POOL_DEBUG=1 shows the traceback)",
            type(exc).__name__,
            exc,
        )
        if os.environ.get("H5POOL_DEBUG"):
            raise
        return 1


class UsageError(Exception):
    """A combination of options that cannot work; reported by argparse."""


class _Prefixed(logging.Formatter):
    """``h5pool: message``, without doubling the prefix the library's messages carry."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if text.startswith("h5pool: ") else f"h5pool: {text}"


def positive(text: str) -> int:
    return _integer(text, 1)


def non_negative(text: str) -> int:
    return _integer(text, 0)


def _integer(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} is below the least allowed, {least}")
    return value


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object {{...}}, got {text!r}")
    return value


def check_output(path: str | None, option: str) -> None:
    """Refuse an output path that cannot be written, before minutes of work."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a folder; give a file name")
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: cannot be written")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="h5pool",
        description="Serve many-file HDF5 corpora to PyTorch; measure how fast.",
    )
    parser.add_argument("--version", action="version", version=f"h5pool {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    run_bench = commands.add_parser(
        "bench",
        help="benchmark h5pool against the naive recipes",
        description="Time every strategy on the same rows of one corpus and print a table. "
        "With no PATHS, a synthetic corpus is made in a temporary folder and removed after.",
    )
    run_bench.add_argument("paths", nargs="*", help="HDF5 files, folders or glob patterns")
    run_bench.add_argument("--key", default="data", help="dataset to read (default: data)")
    run_bench.add_argument(
        "--files",
        type=positive,
        default=synthetic.DEFAULT_FILES,
        help="synthetic corpus: number of files (default: %(default)s)",
    )
    run_bench.add_argument(
        "--rows",
        type=positive,
        default=synthetic.DEFAULT_ROWS,
        help="synthetic corpus: rows per file (default: %(default)s)",
    )
    run_bench.add_argument(
        "--width",
        type=positive,
        default=synthetic.DEFAULT_WIDTH,
        help="synthetic corpus: float32 values per row (default: %(default)s)",
    )
    run_bench.add_argument(
        "--storage",
        choices=synthetic.STORAGE_KINDS,
        default="contiguous",
        help="synthetic corpus: contiguous rows, gzip 4 + shuffle rows in chunks of 8, "
        "or (64, 64, 3) uint8 images one per gzip chunk (default: %(default)s)",
    )
    run_bench.add_argument(
        "--pool",
        type=positive,
        default=64,
        help="handles per process for the pooled strategies (default: 64)",
    )
    run_bench.add_argument(
        "--samples",
        type=positive,
        default=2000,
        help="samples read by the slow strategies (default: %(default)s)",
    )
    run_bench.add_argument(
        "--fast-samples",
        type=positive,
        default=40000,
        help="samples read by the fast strategies (default: %(default)s)",
    )
    run_bench.add_argument(
        "--workers",
        type=non_negative,
        default=2,
        help="DataLoader workers for the end-to-end rows (default: 2)",
    )
    run_bench.add_argument(
        "--fd-limit",
        type=non_negative,
        default=1024,
        help="run under this soft RLIMIT_NOFILE, the common cluster limit; "
        "0 keeps the process's own (default: %(default)s)",
    )
    run_bench.add_argument(
        "--strategies",
        nargs="+",
        choices=STRATEGIES,
        default=list(STRATEGIES),
        metavar="NAME",
        help=f"subset to run, from: {', '.join(STRATEGIES)}",
    )
    run_bench.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    add_storage_options(run_bench)
    run_bench.add_argument(
        "--plot", metavar="FILE.png", help="also draw a bar chart (needs h5pool[plot])"
    )
    run_bench.set_defaults(run=run_bench_command)

    info = commands.add_parser(
        "info",
        help="describe a corpus: files, samples, datasets, bad files",
        description="Scan the files and summarise their datasets: shape, dtype, chunking, "
        "compression, and how h5pool reads each: through a byte map (pread, chunks decoded by "
        "h5pool) or through HDF5, and why.",
    )
    info.add_argument("paths", nargs="+", help="HDF5 files, folders or glob patterns")
    info.add_argument(
        "--key",
        nargs="+",
        help="the dataset(s) of the rows layout: count samples along axis 0 and apply the "
        "checks PooledH5Dataset applies (equal lengths, no scalars, data inside the file)",
    )
    info.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    add_storage_options(info)
    info.set_defaults(run=run_info_command)

    index = commands.add_parser(
        "index",
        help="build and save the global index for fast start-up",
        description="Scan every file once and save the index; "
        "PooledH5Dataset(..., index_cache=INDEX) then starts without opening the files, "
        "rescanning only files whose size or mtime changed.",
    )
    index.add_argument("paths", nargs="+", help="HDF5 files, folders or glob patterns")
    index.add_argument("--out", required=True, metavar="INDEX", help="where to save the index")
    index.add_argument("--key", nargs="+", default=["data"], help="dataset(s) of the rows layout")
    index.add_argument("--layout", choices=["rows", "members"], default="rows")
    index.add_argument("--group", default="/", help="group of the members layout")
    index.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out files that cannot be indexed (listed on stderr) instead of stopping",
    )
    add_storage_options(index)
    index.set_defaults(run=run_index_command)

    check = commands.add_parser(
        "check",
        help="read every byte of every dataset through HDF5 and list damaged files",
        description="Read every dataset and attribute of every file in full through HDF5, "
        "which verifies the checksums the files carry (metadata checksums of "
        "libver='latest' files, fletcher32 chunk checksums). Exit 3 if any file is damaged.",
    )
    check.add_argument("paths", nargs="+", help="HDF5 files, folders or glob patterns")
    add_storage_options(check)
    check.set_defaults(run=run_check_command)
    return parser


def add_storage_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--storage-options",
        type=json_object,
        default=None,
        metavar="JSON",
        help="fsspec options for URLs, e.g. '{\"anon\": true}' or "
        '\'{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}\'',
    )


def write(text: str = "") -> None:
    sys.stdout.write(text + "\n")


# -- bench ----------------------------------------------------------------------------------


def run_bench_command(args: argparse.Namespace) -> int:
    from h5pool import bench  # imports torch: only when a command needs it

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
        limit = stack.enter_context(bench.lowered_fd_limit(args.fd_limit or None))
        bar = stack.enter_context(
            progress_bar(total=len(args.strategies), desc="benchmarking", unit="strategy")
        )

        started: list[str] = []

        def progress(name: str) -> None:
            if started:
                bar.update(1)
            started.append(name)
            bar.set_postfix_str(name)

        config = bench.BenchConfig(
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
        results = bench.run(config)
        bar.update(1)
    report = bench_report(results, corpus_text, limit)
    report["recommendation"] = bench.recommendation(results, args.workers)
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
    from h5pool.bench import ratios

    table = ratios(results)
    rows = []
    for result in results:
        row = result.as_dict()
        row.update(table[result.strategy])
        rows.append(row)
    return {"corpus": corpus_text, "fd_limit": limit, "machine": machine_text(), "results": rows}


def _number(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def format_table(report: dict[str, Any]) -> str:
    header = [
        "strategy",
        "µs/sample",
        "samples/s",
        "vs open-per-sample",
        "vs raw read",
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
    return "\n".join(intro + aligned)


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise UsageError('--plot needs matplotlib: pip install "h5pool[plot]"') from exc


def draw_plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if r["samples_per_s"]]
    names = [r["strategy"] for r in rows]
    rates = [r["samples_per_s"] for r in rows]
    colours = [
        "#c44e52"
        if n in ("open-per-sample", "open-all")
        else "#8c8c8c"
        if n in ("raw-pread", "raw-decode", "h5py-kept-open", "loader-memory")
        else "#4c72b0"
        for n in names
    ]
    figure, axes = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    axes.barh(names, rates, color=colours)
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


# -- info -------------------------------------------------------------------------------------


def run_info_command(args: argparse.Namespace) -> int:
    check_output(args.json, "--json")
    files = expand_files(args.paths, Filesystems(args.storage_options))
    summary = describe_corpus(files, args.key, args.storage_options)
    write(format_info(summary))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summary, out, indent=2)
    return EXIT_DATA if summary["bad_files"] and not summary["good_files"] else 0


def describe_corpus(
    files: list[str], keys: Sequence[str] | None, storage_options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Datasets seen across the corpus; the first file that has each describes it."""
    pool = HandlePool(max_open=8, storage_options=storage_options)
    datasets: dict[str, dict[str, Any]] = {}
    bad: list[dict[str, str]] = []
    samples = 0
    total_bytes = 0
    for path in progress_bar(iterable=files, desc="scanning", unit="file"):
        try:
            total_bytes += pool.stamp(path)[0]
            entry = pool.acquire(path)
            try:
                local = pool.plain_descriptor and entry.raw_fd() is not None
                for name, node in _datasets_of(entry.file):
                    seen = datasets.get(name)
                    read_path = map_dataset(node, path, local=local).spec.describe()
                    if seen is None:
                        seen = datasets[name] = describe_dataset(node)
                    else:
                        seen["files"] += 1
                    seen["read_paths"][read_path] = seen["read_paths"].get(read_path, 0) + 1
            finally:
                pool.release(entry)
            if keys:  # the dataset's own checks, so a clean report means it builds
                samples += scan_file(pool, path, "rows", keys, "/").count
        except (CorpusError, OSError) as exc:
            bad.append({"path": path, "error": str(exc)})
    pool.close()
    return {
        "files": len(files),
        "good_files": len(files) - len(bad),
        "bytes": total_bytes,
        "key": list(keys) if keys else None,
        "samples": samples if keys else None,
        "datasets": datasets,
        "bad_files": bad,
    }


def _datasets_of(file: h5py.File) -> list[tuple[str, h5py.Dataset]]:
    found: list[tuple[str, h5py.Dataset]] = []

    def visit(name: str, node: Any) -> None:
        if isinstance(node, h5py.Dataset):
            found.append((name, node))

    file.visititems(visit)
    return found


def describe_dataset(dataset: h5py.Dataset) -> dict[str, Any]:
    return {
        "files": 1,
        "shape": list(dataset.shape) if dataset.shape is not None else None,
        "dtype": str(dataset.dtype),
        "chunks": list(dataset.chunks) if dataset.chunks else None,
        "compression": dataset.compression,
        "read_paths": {},
    }


def format_info(summary: dict[str, Any]) -> str:
    lines = [
        f"files: {summary['files']:,} ({summary['good_files']:,} readable), "
        f"{summary['bytes'] / 2**20:,.1f} MiB",
    ]
    if summary["key"] is not None:
        keys = ", ".join(repr(k) for k in summary["key"])
        lines.append(f"samples along axis 0 of {keys}: {summary['samples']:,}")
    lines.append("datasets (shape and layout of the first file that has them):")
    for name, info in sorted(summary["datasets"].items()):
        layout = f"chunks {tuple(info['chunks'])}" if info["chunks"] else "contiguous"
        if info["compression"]:
            layout += f", {info['compression']}"
        files = info["files"]
        paths = info["read_paths"]
        how = "; ".join(
            text if count == files else f"{text} in {count:,} of {files:,} files"
            for text, count in sorted(paths.items(), key=lambda item: -item[1])
        )
        shape = tuple(info["shape"]) if info["shape"] is not None else "null"
        lines.append(
            f"  {name}: shape {shape} {info['dtype']}, {layout}; in {plural(files, 'file')}; "
            f"read by {how}"
        )
    if summary["bad_files"]:
        lines.append(f"bad files: {len(summary['bad_files']):,}")
        lines.extend(f"  {bad['error']}" for bad in summary["bad_files"])
    else:
        lines.append("bad files: none")
    return "\n".join(lines)


# -- index --------------------------------------------------------------------------------------


def run_index_command(args: argparse.Namespace) -> int:
    from h5pool.dataset import PooledH5Dataset

    check_output(args.out, "--out")
    existed = os.path.exists(args.out)
    dataset = PooledH5Dataset(
        args.paths,
        args.key,
        layout=args.layout,
        group=args.group,
        index_cache=args.out,
        progress=True,
        storage_options=args.storage_options,
        on_error="skip" if args.skip_bad else "raise",
    )
    index = dataset.index
    write(
        f"{'updated' if existed else 'wrote'} {args.out}: {plural(len(index.files), 'file')}, "
        f"{plural(len(index), 'sample')}, {int(np.sum(index.sizes)) / 2**20:,.1f} MiB indexed"
    )
    if dataset.skipped:
        write(f"left out {plural(len(dataset.skipped), 'bad file')} (reasons above)")
    return 0


def run_check_command(args: argparse.Namespace) -> int:
    from h5pool.check import check_file

    files = expand_files(args.paths, Filesystems(args.storage_options))
    damaged = 0
    read = 0
    for path in progress_bar(iterable=files, desc="checking", unit="file"):
        result = check_file(path, args.storage_options)
        read += result.bytes_read
        if not result.ok:
            damaged += 1
            for problem in result.problems:
                logger.error("%s", problem)
    write(
        f"checked {plural(len(files), 'file')} ({read / 2**20:,.1f} MiB read): "
        f"{plural(damaged, 'damaged file') if damaged else 'none damaged'}"
    )
    return EXIT_DATA if damaged else 0


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
