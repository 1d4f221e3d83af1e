"""Data-parallel training with torchrun: every rank reads its own share, exactly once.

    torchrun --standalone --nproc_per_node 2 examples/ddp_torchrun.py [FOLDER]

(gloo on CPU; use the nccl backend on GPUs.) With no FOLDER, rank 0 writes a
small synthetic corpus to a temporary folder shared with the other ranks.
Every rank names the same index cache: the first to start scans the files,
the others wait for it and read the cache. The ranks' shares come from
torch.distributed, so nothing about ranks is passed to h5pool. At the end
the ranks gather the rows they read and rank 0 checks that every sample was
read exactly once (drop_last=True: no padding).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from h5pool import Loader, PooledH5Dataset
from h5pool.bench import synthetic

logger = logging.getLogger("ddp_torchrun")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help="folder of HDF5 files with a 'data' key")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    folder = [args.folder]
    if args.folder is None:
        folder = [tempfile.mkdtemp(prefix="h5pool-ddp-") if rank == 0 else None]
        if rank == 0:
            synthetic.make_corpus(folder[0], files=24, rows=30, width=8)
        dist.broadcast_object_list(folder)  # the folder's name, once it is written
    ds = PooledH5Dataset(folder[0], "data", index_cache=os.path.join(folder[0], "index.npz"))
    loader = Loader(ds, batch_size=32, drop_last=True)
    model = DistributedDataParallel(torch.nn.Linear(8, 1))
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-6)
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        read: list[int] = []
        for batch in loader:
            rows = batch["data"]
            loss = model(rows).pow(2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            read.extend(int(v) for v in rows[:, 0].tolist())
        shares: list[list[int] | None] = [None] * world
        dist.all_gather_object(shares, read)
        if rank == 0:
            every = [v for share in shares for v in share or []]
            usable = len(ds) // world // 32 * 32 * world
            assert len(every) == len(set(every)) == usable, (len(every), usable)
            logger.info(
                "epoch %d: %d ranks read %d distinct samples once each", epoch, world, usable
            )
    # DDP's reducer holds the process group: free it first, or tearing the group
    # down under it can abort the process at exit.
    del model, optimiser
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
