"""``h5pool info``: what a corpus holds, how h5pool will read it, which files are bad.

Why it runs the dataset's own scan (:func:`~h5pool.index.scan_one.scan_file`)
for the keys given: a corpus ``info`` calls clean builds as a dataset, and a
corpus it calls bad (exit 3) would raise in ``PooledH5Dataset``.  Bad files
with the same reason are one line with a count, so a thousand files missing
the same key do not bury the one truncated file, and a key found deeper, in
groups, suggests the groups layout.
"""

from __future__ import annotations

import argparse
import json
import posixpath
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np

from h5pool.cli.common import EXIT_DATA, check_layout_options, check_output, plural, write
from h5pool.errors import CorpusError, MissingKeyError
from h5pool.hdf5.byte_map import map_dataset
from h5pool.index.listing import expand_files
from h5pool.index.scan_one import scan_file
from h5pool.pool.handle_pool import HandlePool
from h5pool.pool.pooled_file import PooledFile
from h5pool.pool.remote import Filesystems, is_url
from h5pool.progress import progress_bar

#: Bad files named under one collapsed reason before "and N more".
_NAMED_PER_REASON = 3


def run_info_command(args: argparse.Namespace) -> int:
    check_output(args.json, "--json")
    check_layout_options(args)
    files = expand_files(args.paths, Filesystems(args.storage_options))
    summary = describe_corpus(files, args.key, args.storage_options, args.layout, args.group)
    write(format_info(summary))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summary, out, indent=2)
    return EXIT_DATA if summary["bad_files"] else 0


def describe_corpus(
    files: list[str],
    keys: Sequence[str] | None,
    storage_options: dict[str, Any] | None = None,
    layout: str = "rows",
    group: str = "/",
) -> dict[str, Any]:
    """Datasets seen across the corpus; the first file that has each describes it.

    With ``layout="groups"`` or ``"members"``: the samples under ``group``
    (and for groups, their lengths) instead of every dataset.
    """
    pool = HandlePool(max_open=8, storage_options=storage_options)
    datasets: dict[str, dict[str, Any]] = {}
    bad: list[dict[str, str]] = []
    samples = 0
    total_bytes = 0
    lengths: list[int] = []
    for path in progress_bar(iterable=files, desc="scanning", unit="file"):
        names: list[str] = []
        try:
            total_bytes += pool.stamp(path)[0]
            if layout != "rows":
                found = scan_file(pool, path, layout, keys or ("data",), group)  # type: ignore[arg-type]
                lengths.extend(found.lengths)
                samples += found.count
                continue
            entry = pool.acquire(path)
            try:
                remote = is_url(path)
                local = remote or (pool.plain_descriptor and entry.raw_fd() is not None)
                root = entry.file if remote else None
                for name, node in _datasets_of(entry):
                    names.append(name)
                    seen = datasets.get(name)
                    read_path = map_dataset(node, path, local=local, root=root).spec.describe(
                        remote=remote
                    )
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
            bad.append(_bad_file(path, exc, keys if layout == "rows" else None, names))
    pool.close()
    return {
        "files": len(files),
        "good_files": len(files) - len(bad),
        "bytes": total_bytes,
        "layout": layout,
        "key": list(keys) if keys else None,
        "samples": samples if keys or layout == "members" else None,
        "datasets": datasets,
        "bad_files": bad,
        "groups": _group_summary(lengths, group) if layout == "groups" else None,
        "suggestion": _suggestion(bad, keys),
    }


def _bad_file(
    path: str, exc: BaseException, keys: Sequence[str] | None, names: list[str]
) -> dict[str, str]:
    """What went wrong with one file: the message, the reason without the path,
    and for a key that is missing here but present deeper, the group holding it."""
    error = str(exc)
    reason = error[len(path) + 2 :] if error.startswith(f"{path}: ") else error
    found = {"path": path, "error": error, "reason": reason}
    if isinstance(exc, MissingKeyError) and keys:
        holder = group_holding(keys, names)
        if holder is not None:
            found["groups_under"] = holder
    return found


def group_holding(keys: Sequence[str], names: Sequence[str]) -> str | None:
    """The group whose subgroups hold ``keys``: ``data`` for ``data/demo_0/actions``
    and the key ``actions``; ``None`` when no dataset path ends with a key."""
    for name in names:
        for key in keys:
            tail = "/" + key.strip("/")
            stem = "/" + name.strip("/")
            if stem.endswith(tail) and stem != tail:
                sample_group = stem[: -len(tail)]
                return posixpath.dirname(sample_group).lstrip("/") or "/"
    return None


def _suggestion(bad: list[dict[str, str]], keys: Sequence[str] | None) -> str | None:
    holders = sorted({b["groups_under"] for b in bad if "groups_under" in b})
    if not holders or not keys:
        return None
    wanted = " ".join(keys)
    return (
        f"the keys are inside groups under {holders[0]!r}: one sample per group is "
        f"--layout groups --group {holders[0]} --key {wanted}"
    )


def _group_summary(lengths: list[int], group: str) -> dict[str, Any]:
    found = np.array(lengths, dtype=np.int64)
    return {
        "group": group,
        "count": len(found),
        "min_length": int(found.min()) if len(found) else 0,
        "max_length": int(found.max()) if len(found) else 0,
        "mean_length": float(found.mean()) if len(found) else 0.0,
    }


def _datasets_of(entry: PooledFile) -> list[tuple[str, h5py.Dataset]]:
    """Every dataset by every name it is reached by: soft and external links too.

    Each goes through :meth:`PooledFile.dataset`, whose checks (a datatype numpy
    can represent) make a damaged one a :class:`CorpusError` naming it.
    """
    names: list[str] = []
    entry.file.visit_links(names.append)
    found: list[tuple[str, h5py.Dataset]] = []
    for name in names:
        try:
            node = entry.file.get(name)
        except (KeyError, OSError):  # a dangling link names nothing to read
            continue
        if isinstance(node, h5py.Dataset):
            found.append((name, entry.dataset(name)))
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
    elif summary.get("layout") == "members":
        lines.append(f"members (samples): {summary['samples']:,}")
    elif summary["key"] is not None:
        keys = ", ".join(repr(k) for k in summary["key"])
        lines.append(f"samples along axis 0 of {keys}: {summary['samples']:,}")
    lines.extend(_dataset_lines(summary["datasets"]))
    lines.extend(bad_file_lines(summary["bad_files"]))
    if summary.get("suggestion"):
        lines.append(f"hint: {summary['suggestion']}")
    return "\n".join(lines)


def _dataset_lines(datasets: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["datasets (shape and layout of the first file that has them):"] if datasets else []
    for name, info in sorted(datasets.items()):
        layout = f"chunks {tuple(info['chunks'])}" if info["chunks"] else "contiguous"
        if info["compression"]:
            layout += f", {info['compression']}"
        files = info["files"]
        how = "; ".join(
            text if count == files else f"{text} in {count:,} of {files:,} files"
            for text, count in sorted(info["read_paths"].items(), key=lambda item: -item[1])
        )
        shape = tuple(info["shape"]) if info["shape"] is not None else "null"
        lines.append(
            f"  {name}: shape {shape} {info['dtype']}, {layout}; in {plural(files, 'file')}; "
            f"read by {how}"
        )
    return lines


def bad_file_lines(bad: list[dict[str, str]]) -> list[str]:
    """One line per distinct reason, with its count and the first few files.

    Reasons are compared without the list of datasets a missing-key message
    adds, which can differ between files that fail the same way.
    """
    if not bad:
        return ["bad files: none"]
    by_reason: dict[str, list[dict[str, str]]] = {}
    for found in bad:
        by_reason.setdefault(found["reason"].split("; datasets: ")[0], []).append(found)
    lines = [f"bad files: {len(bad):,}"]
    for same in by_reason.values():
        if len(same) == 1:
            lines.append(f"  {same[0]['error']}")
            continue
        named = ", ".join(found["path"] for found in same[:_NAMED_PER_REASON])
        more = len(same) - _NAMED_PER_REASON
        lines.append(f"  {len(same):,} files: {same[0]['reason']}")
        lines.append(f"    {named}" + (f" and {more:,} more" if more > 0 else ""))
    return lines
