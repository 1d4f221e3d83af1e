"""A training loop over a folder of HDF5 files with h5pool.Loader.

    python examples/train_loop.py [FOLDER] [--epochs N]

With no FOLDER, a small synthetic corpus is written to a temporary folder
first. Each row's value is its global sample number (``synthetic`` writes
``file * rows + row``), which the loop regresses from the row's mean: a
model that learns proves the rows arrive, and the epoch count proves each
arrives once.
"""

from __future__ import annotations

import argparse
import logging
import tempfile

import torch

from h5pool import Loader, PooledH5Dataset
from h5pool.bench import synthetic

logger = logging.getLogger("train_loop")


def train(folder: str, epochs: int) -> None:
    ds = PooledH5Dataset(folder, "data")
    loader = Loader(ds, batch_size=64, seed=0)  # block-shuffled, read ahead in threads
    model = torch.nn.Linear(1, 1)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    scale = float(len(ds))
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        seen = 0
        total = 0.0
        for batch in loader:
            rows = batch["data"]
            x = rows.mean(dim=1, keepdim=True) / scale
            target = rows[:, :1] / scale
            loss = torch.nn.functional.mse_loss(model(x), target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            seen += len(rows)
            total += loss.item() * len(rows)
        logger.info("epoch %d: %d samples, mean loss %.6f", epoch, seen, total / seen)
        if seen != len(ds):
            raise SystemExit(f"epoch {epoch} saw {seen} samples of {len(ds)}")
    logger.info("stats of the last epoch: %s", loader.stats())


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help="folder of HDF5 files with a 'data' key")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    if args.folder:
        train(args.folder, args.epochs)
        return
    with tempfile.TemporaryDirectory() as folder:
        synthetic.make_corpus(folder, files=40, rows=32, width=16)
        train(folder, args.epochs)


if __name__ == "__main__":
    main()
