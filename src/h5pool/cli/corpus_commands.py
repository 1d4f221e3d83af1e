"""``h5pool index`` and ``check``: index and verify a corpus."""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np

from h5pool.cli.check import check_file
from h5pool.cli.common import EXIT_DATA, check_layout_options, check_output, plural, write
from h5pool.index.listing import expand_files
from h5pool.index.obtain import obtain_index
from h5pool.pool.handle_pool import HandlePool
from h5pool.pool.remote import Filesystems
from h5pool.progress import progress_bar

logger = logging.getLogger("h5pool.cli.main")


# -- index --------------------------------------------------------------------------------------


def run_index_command(args: argparse.Namespace) -> int:
    check_output(args.out, "--out")
    check_layout_options(args)
    existed = os.path.exists(args.out)
    pool = HandlePool(storage_options=args.storage_options)
    try:
        index, skipped, _ = obtain_index(
            args.paths,
            layout=args.layout,
            keys=args.key or ["data"],  # the dataset's default, so its cache is this one
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
