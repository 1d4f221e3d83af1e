"""Run a DataLoader over a corpus under a real descriptor limit; print a JSON report.

Started as a subprocess by tests/test_dataloader.py, so the limit and the
multiprocessing context are real and do not leak into the test process.
"""

from __future__ import annotations

import argparse
import json
import resource
from collections import Counter

from torch.utils.data import DataLoader

from h5pool import PooledH5Dataset
from helpers.corpus import collate_with_worker_stats, encoded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus")
    parser.add_argument("--context", default="fork")
    parser.add_argument("--nofile", type=int, default=256)
    parser.add_argument("--max-open", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--persistent", choices=["yes", "no", "both"], default="both")
    parser.add_argument("--shuffle", action="store_true")
    args = parser.parse_args()

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))

    ds = PooledH5Dataset(args.corpus, ["data", "label"], max_open=args.max_open)
    # The parent reads too, so fork children inherit open handles they must drop.
    parent_sample = ds[len(ds) - 1]
    expected = Counter(
        encoded(n, r) for n, count in enumerate(ds.index.counts.tolist()) for r in range(count)
    )
    report: dict[str, object] = {
        "samples": len(ds),
        "max_open": ds.pool.max_open,
        "parent_ok": int(parent_sample["label"]) == encoded(len(ds.files) - 1, 3),
        "runs": [],
    }
    persistent_modes = {"yes": [True], "no": [False], "both": [False, True]}[args.persistent]
    for persistent in persistent_modes:
        loader = DataLoader(
            ds,
            batch_size=64,
            shuffle=args.shuffle,
            num_workers=2,
            multiprocessing_context=args.context,
            persistent_workers=persistent,
            collate_fn=collate_with_worker_stats,
        )
        for epoch in range(args.epochs):
            seen: Counter[int] = Counter()
            data_ok = True
            peaks: dict[int, int] = {}
            fd_peaks: dict[int, int] = {}
            pids = set()
            for batch in loader:
                seen.update(batch["labels"])
                data_ok &= batch["data_ok"]
                pid = batch["pid"]
                pids.add(pid)
                peaks[pid] = max(peaks.get(pid, 0), batch["peak_open"])
                fd_peaks[pid] = max(fd_peaks.get(pid, 0), batch["fd_open"])
            report["runs"].append(  # type: ignore[attr-defined]
                {
                    "persistent": persistent,
                    "epoch": epoch,
                    "exactly_once": seen == expected,
                    "missing": len(expected - seen),
                    "extra": len(seen - expected),
                    "data_ok": data_ok,
                    "worker_pids": sorted(pids),
                    "peak_open": max(peaks.values()),
                    "peak_fds": max(fd_peaks.values()),
                }
            )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
