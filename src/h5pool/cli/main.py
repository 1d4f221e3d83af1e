"""The ``h5pool`` command line: ``bench``, ``info``, ``index`` and ``check``.

Exit codes: 0 success, 2 bad usage, 3 a problem with the data (the message
names the file), 4 the process ran out of file descriptors.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from h5pool import __version__
from h5pool.bench import synthetic
from h5pool.bench.registry import STRATEGIES
from h5pool.cli.bench_command import run_bench_command
from h5pool.cli.common import (
    EXIT_DATA,
    EXIT_DESCRIPTORS,
    EXIT_USAGE,
    UsageError,
    add_layout_options,
    json_object,
    non_negative,
    positive,
)
from h5pool.cli.corpus_commands import run_check_command, run_index_command
from h5pool.cli.info_command import run_info_command
from h5pool.errors import CorpusError, DescriptorLimitError

logger = logging.getLogger("h5pool.cli.main")


def _load_filter_plugins() -> None:
    """Register hdf5plugin's filters (Blosc, Zstd, LZ4, ...) when it is installed.

    A library leaves that import to its caller; a command-line user has no way
    to make it, and pandas' Blosc tables or Zstd files would read as damaged.
    """
    try:
        importlib.import_module("hdf5plugin")
    except ImportError:
        logger.debug("hdf5plugin is not installed: only HDF5's own filters")


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
        _load_filter_plugins()
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


class _Prefixed(logging.Formatter):
    """``h5pool: message``, without doubling the prefix the library's messages carry."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if text.startswith("h5pool: ") else f"h5pool: {text}"


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
    add_layout_options(
        info,
        "the dataset(s) of a sample (--key a b, or --key a --key b): count samples and "
        "apply the checks PooledH5Dataset applies (equal lengths, no scalars, data inside "
        "the file)",
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
    add_layout_options(
        index, "the dataset(s) of a sample (default: data; --key a b or --key a --key b)"
    )
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
