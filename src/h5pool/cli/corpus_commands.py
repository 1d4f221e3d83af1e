"""``h5pool info``, ``index`` and ``check``: describe, index and verify a corpus."""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np

from h5pool.cli.check import check_file
from h5pool.cli.common import EXIT_DATA, UsageError, check_output, plural, write
from h5pool.errors import CorpusError
from h5pool.hdf5.byte_map import map_dataset
from h5pool.index.listing import expand_files
from h5pool.index.obtain import obtain_index
from h5pool.index.scan_one import scan_file
from h5pool.pool.handle_pool import HandlePool
from h5pool.pool.remote import Filesystems
from h5pool.progress import progress_bar

logger = logging.getLogger("h5pool.cli.main")


def run_info_command(args: argparse.Namespace) -> int:
    check_output(args.json, "--json")
    files = expand_files(args.paths, Filesystems(args.storage_options))
    if args.layout == "groups" and not args.key:
        raise UsageError("--layout groups needs --key (the datasets inside each group)")
    summary = describe_corpus(files, args.key, args.storage_options, args.layout, args.group)
    write(format_info(summary))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summary, out, indent=2)
    return EXIT_DATA if summary["bad_files"] and not summary["good_files"] else 0


def describe_corpus(
    files: list[str],
    keys: Sequence[str] | None,
    storage_options: dict[str, Any] | None = None,
    layout: str = "rows",
    group: str = "/",
) -> dict[str, Any]:
    """Datasets seen across the corpus; the first file that has each describes it.

    With ``layout="groups"``: the groups under ``group`` and their lengths.
    """
    pool = HandlePool(max_open=8, storage_options=storage_options)
    datasets: dict[str, dict[str, Any]] = {}
    bad: list[dict[str, str]] = []
    samples = 0
    total_bytes = 0
    lengths: list[int] = []
    for path in progress_bar(iterable=files, desc="scanning", unit="file"):
        try:
            total_bytes += pool.stamp(path)[0]
            if layout == "groups":
                assert keys is not None
                found = scan_file(pool, path, "groups", keys, group)
                lengths.extend(found.lengths)
                samples += found.count
                continue
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
        "groups": _group_summary(lengths, group) if layout == "groups" else None,
    }


def _group_summary(lengths: list[int], group: str) -> dict[str, Any]:
    found = np.array(lengths, dtype=np.int64)
    return {
        "group": group,
        "count": len(found),
        "min_length": int(found.min()) if len(found) else 0,
        "max_length": int(found.max()) if len(found) else 0,
        "mean_length": float(found.mean()) if len(found) else 0.0,
    }


def _datasets_of(file: h5py.File) -> list[tuple[str, h5py.Dataset]]:
    """Every dataset by every name it is reached by: soft and external links too."""
    names: list[str] = []
    file.visit_links(names.append)
    found: list[tuple[str, h5py.Dataset]] = []
    for name in names:
        try:
            node = file.get(name)
        except (KeyError, OSError):  # a dangling link names nothing to read
            continue
        if isinstance(node, h5py.Dataset):
            found.append((name, node))
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
    groups = summary.get("groups")
    if groups is not None:
        keys = ", ".join(repr(k) for k in summary["key"])
        lines.append(
            f"groups under {groups['group']!r} with {keys}: {groups['count']:,} "
            f"(lengths {groups['min_length']:,} to {groups['max_length']:,}, "
            f"mean {groups['mean_length']:,.1f})"
        )
    elif summary["key"] is not None:
        keys = ", ".join(repr(k) for k in summary["key"])
        lines.append(f"samples along axis 0 of {keys}: {summary['samples']:,}")
    if summary["datasets"]:
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
    check_output(args.out, "--out")
    existed = os.path.exists(args.out)
    pool = HandlePool(storage_options=args.storage_options)
    try:
        index, skipped, _ = obtain_index(
            args.paths,
            layout=args.layout,
            keys=args.key or ["data"],
            group=args.group,
            pool=pool,
            cache=args.out,
            progress=True,
            on_error="skip" if args.skip_bad else "raise",
        )
    finally:
        pool.close()
    write(
        f"{'updated' if existed else 'wrote'} {args.out}: {plural(len(index.files), 'file')}, "
        f"{plural(len(index), 'sample')}, {int(np.sum(index.sizes)) / 2**20:,.1f} MiB indexed"
    )
    if skipped:
        write(f"left out {plural(len(skipped), 'bad file')} (reasons above)")
    return 0


def run_check_command(args: argparse.Namespace) -> int:
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
