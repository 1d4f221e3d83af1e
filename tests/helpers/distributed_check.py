"""Two gloo ranks, each with a 2-worker DataLoader and a BlockShuffleSampler
(drop_last True, then False).

Run by tests/test_distributed.py as a subprocess; prints one JSON report.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from h5pool import BlockShuffleSampler, PooledH5Dataset
from helpers.corpus import collate_with_worker_stats


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_rank(rank: int, world: int, port: int, corpus: str, out: str, cache: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    # Both ranks name one index cache: one of them scans, the other waits and reads it.
    ds = PooledH5Dataset(corpus, ["data", "label"], max_open=8, index_cache=cache)
    modes: dict[str, Any] = {}
    for drop_last in (True, False):  # one process group for both: ranks start slowly
        sampler = BlockShuffleSampler(ds, seed=42, drop_last=drop_last)  # ranks from the group
        loader = DataLoader(
            ds, batch_size=16, sampler=sampler, num_workers=2, collate_fn=collate_with_worker_stats
        )
        epochs: list[dict[str, Any]] = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            labels: list[int] = []
            ok = True
            for batch in loader:
                labels.extend(batch["labels"])
                ok &= batch["data_ok"]
            epochs.append({"labels": labels, "data_ok": ok, "len": len(sampler)})
        modes[str(drop_last)] = {
            "epochs": epochs,
            "replicas": sampler.num_replicas,
            "rank": sampler.rank,
            "files_per_block": sampler.files_per_block,
        }
    gathered: list[Any] = [None] * world
    dist.all_gather_object(
        gathered, {"rank": rank, "modes": modes, "files_scanned": ds.index_stats.files_scanned}
    )
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"samples": len(ds), "ranks": gathered}, f)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus")
    parser.add_argument("out")
    args = parser.parse_args()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(
        run_rank,
        args=(2, free_port(), args.corpus, args.out, args.out + ".index.npz"),
        nprocs=2,
        join=True,
    )


if __name__ == "__main__":
    main()
