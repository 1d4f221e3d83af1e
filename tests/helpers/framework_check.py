"""Training frameworks around h5pool, run for real by tests/test_frameworks.py.

Every process writes the labels it trained on, per epoch, to
``OUT/rank{rank}.json``; the test checks exactly-once and the order.

    python framework_check.py lightning-loader CORPUS OUT
    python framework_check.py lightning-sampler CORPUS OUT
    torchrun --nproc_per_node 2 framework_check.py torchrun CORPUS OUT
    torchrun --nproc_per_node 2 framework_check.py accelerate CORPUS OUT
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, ClassVar

import torch
import torch.distributed as dist

from h5pool import BlockShuffleSampler, Loader, PooledH5Dataset

EPOCHS = 2
BATCH = 8


def write(out: str, rank: int, epochs: dict[int, list[int]], **extra: Any) -> None:
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"epochs": {str(k): v for k, v in epochs.items()}, **extra}, f)


class RecordingLoader(Loader):
    """A Loader that notes every ``set_epoch`` a framework makes."""

    calls: ClassVar[list[int]] = []

    def set_epoch(self, epoch: int) -> None:
        RecordingLoader.calls.append(epoch)
        super().set_epoch(epoch)


def lightning(corpus: str, out: str, use_loader: bool) -> None:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    class Model(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
            self.seen: dict[int, list[int]] = {}

        def training_step(self, batch: dict[str, torch.Tensor], index: int) -> torch.Tensor:
            labels = batch["label"].tolist()
            assert bool((batch["data"] == batch["label"][:, None].float()).all())
            self.seen.setdefault(self.current_epoch, []).extend(labels)
            return self.layer(batch["data"] / 1000.0).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self) -> Any:
            ds = PooledH5Dataset(corpus, ["data", "label"], max_open=4)
            if use_loader:
                return RecordingLoader(ds, BATCH, seed=7, num_threads=2)
            sampler = BlockShuffleSampler(ds, seed=7)  # default settings: Lightning must keep it
            return DataLoader(ds, batch_size=BATCH, sampler=sampler)

        def on_train_end(self) -> None:
            write(
                out,
                self.global_rank,
                self.seen,
                world=self.trainer.world_size,
                set_epoch_calls=RecordingLoader.calls,
            )

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=EPOCHS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Model())


def torchrun(corpus: str, out: str, with_accelerate: bool) -> None:
    if with_accelerate:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=True)
    else:
        dist.init_process_group("gloo")
    ds = PooledH5Dataset(corpus, ["data", "label"], max_open=4)
    loader = Loader(ds, BATCH, seed=3, num_threads=2)  # ranks from torch.distributed
    if with_accelerate:
        loader = accelerator.prepare(loader)  # passes through: it is not a DataLoader
    seen: dict[int, list[int]] = {}
    for epoch in range(EPOCHS):
        loader.set_epoch(epoch)
        for batch in loader:
            assert bool((batch["data"] == batch["label"][:, None].float()).all())
            seen.setdefault(epoch, []).extend(batch["label"].tolist())
    rank = dist.get_rank()
    write(out, rank, seen, world=dist.get_world_size(), length=len(loader))
    dist.barrier()
    dist.destroy_process_group()


def accelerate_with_sampler(corpus: str) -> None:
    """The trap: a rank-splitting sampler in a DataLoader given to prepare()."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    accelerator = Accelerator(cpu=True)
    ds = PooledH5Dataset(corpus, ["data", "label"], max_open=4)
    loader = accelerator.prepare(DataLoader(ds, batch_size=BATCH, sampler=BlockShuffleSampler(ds)))
    for _batch in loader:
        pass


def main() -> None:
    mode, corpus, out = sys.argv[1:4]
    if mode == "accelerate-sampler":
        accelerate_with_sampler(corpus)
    elif mode.startswith("lightning"):
        lightning(corpus, out, use_loader=mode == "lightning-loader")
    else:
        torchrun(corpus, out, with_accelerate=mode == "accelerate")


if __name__ == "__main__":
    main()
