"""A robomimic-style writer: one group per demonstration, of its own length.

``data/demo_k/actions`` (T, 7) float32, ``data/demo_k/obs/agentview_image``
(T, 8, 8, 3) uint8 stored gzip-chunked one frame per chunk, ``rewards`` (T,),
and the group attribute ``num_samples = T``, as robomimic writes it.  Every
value encodes ``(file, demo, t)`` so a test checks content, not counts.
"""

from __future__ import annotations

import os

import h5py
import numpy as np


def step_code(file_number: int, demo: int, t: int) -> int:
    return file_number * 10_000 + demo * 100 + t


def demo_lengths(file_number: int, demos: int) -> list[int]:
    return [5 + (file_number * 3 + demo * 7) % 11 for demo in range(demos)]


def write_robomimic_file(path: str | os.PathLike[str], file_number: int, demos: int = 3) -> None:
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["total"] = sum(demo_lengths(file_number, demos))
        for demo, length in enumerate(demo_lengths(file_number, demos)):
            group = data.create_group(f"demo_{demo}")
            codes = np.array([step_code(file_number, demo, t) for t in range(length)])
            group.create_dataset("actions", data=np.repeat(codes[:, None], 7, 1).astype("f4"))
            group.create_dataset("rewards", data=codes.astype("f8"))
            image = (codes[:, None, None, None] % 251).astype("u1") * np.ones((1, 8, 8, 3), "u1")
            group.create_group("obs").create_dataset(
                "agentview_image", data=image, chunks=(1, 8, 8, 3), compression="gzip"
            )
            group.attrs["num_samples"] = length
        f.create_group("mask").create_dataset("train", data=np.array([b"demo_0"]))


def write_robomimic_corpus(folder: str | os.PathLike[str], files: int, demos: int = 3) -> None:
    os.makedirs(folder, exist_ok=True)
    for number in range(files):
        write_robomimic_file(os.path.join(folder, f"robot_{number}.hdf5"), number, demos)
