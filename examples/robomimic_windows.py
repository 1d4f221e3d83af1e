"""Train on windows of robot demonstrations stored robomimic-style.

    python examples/robomimic_windows.py [FOLDER] [--window 10] [--stride 5]

Each file holds ``data/demo_k/actions``, ``data/demo_k/obs/agentview_image``
and so on, one group per demonstration of its own length T (robomimic,
LIBERO). With ``layout="groups"`` and ``window=W`` every run of W steps
starting at 0, S, 2S, ... is a sample; the index holds one length per
demonstration, never one entry per window. With no FOLDER a small corpus of
this shape is written to a temporary folder first. The loop fits a linear
policy from images to actions and checks that every window arrives once.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile

import h5py
import numpy as np
import torch

from h5pool import Loader, PooledH5Dataset

logger = logging.getLogger("robomimic_windows")
KEYS = ["actions", "obs/agentview_image"]


def write_demo_corpus(folder: str, files: int = 6, demos: int = 4) -> None:
    rng = np.random.default_rng(0)
    for number in range(files):
        with h5py.File(os.path.join(folder, f"demos_{number}.hdf5"), "w") as f:
            data = f.create_group("data")
            for demo in range(demos):
                steps = int(rng.integers(20, 60))
                group = data.create_group(f"demo_{demo}")
                group.attrs["num_samples"] = steps
                group.create_dataset("actions", data=rng.normal(size=(steps, 7)).astype("f4"))
                group.create_group("obs").create_dataset(
                    "agentview_image",
                    data=rng.integers(0, 255, size=(steps, 16, 16, 3), dtype=np.uint8),
                    chunks=(1, 16, 16, 3),
                    compression="gzip",
                )


def train(folder: str, window: int, stride: int, epochs: int) -> None:
    ds = PooledH5Dataset(folder, KEYS, layout="groups", group="data", window=window, stride=stride)
    logger.info("%d files, %d windows of %d steps", len(ds.files), len(ds), window)
    loader = Loader(ds, batch_size=16, seed=0)
    # Sized from the data: cameras and action spaces differ between corpora.
    first = ds[0]
    pixels = int(np.prod(first["obs/agentview_image"].shape[1:]))
    policy = torch.nn.Linear(pixels, int(first["actions"].shape[-1]))
    optimiser = torch.optim.Adam(policy.parameters(), lr=1e-3)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        windows = 0
        for batch in loader:
            images = batch["obs/agentview_image"].float() / 255  # (B, W, H, W', C)
            actions = batch["actions"]  # (B, W, A)
            predicted = policy(images.flatten(start_dim=2))
            loss = torch.nn.functional.mse_loss(predicted, actions)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            windows += len(actions)
        if windows != len(ds):
            raise SystemExit(f"epoch {epoch}: {windows} windows of {len(ds)}")
        logger.info("epoch %d: %d windows, loss %.4f", epoch, windows, loss.item())


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help="folder of robomimic-style .hdf5 files")
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--stride", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    if args.folder:
        train(args.folder, args.window, args.stride, args.epochs)
        return
    with tempfile.TemporaryDirectory() as folder:
        write_demo_corpus(folder)
        train(folder, args.window, args.stride, args.epochs)


if __name__ == "__main__":
    main()
