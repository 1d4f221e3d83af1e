"""Who is iterating a sampler: told apart by the callers' frames, once per epoch.

Why a sampler needs to know: two consumers change what its position means.
accelerate's ``BatchSamplerShard`` shards batches again over a sampler that
has already split by rank (half the data lost), and a plain ``DataLoader``
with workers draws indices ``prefetch_factor x num_workers`` batches ahead of
the batches it has delivered (a checkpoint of the sampler skips them).  The
frames are read when iteration starts, never per sample.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

#: Frames between a sampler's ``__iter__`` and its consumer (BatchSampler,
#: ``_next_index``, ``_try_put_index``, ``_reset``, ...), with room to spare.
_DEPTH = 16


def _owners(frame: FrameType | None) -> Iterator[Any]:
    """The ``self`` of each calling frame, innermost first."""
    for _ in range(_DEPTH):
        if frame is None:
            return
        yield frame.f_locals.get("self")
        frame = frame.f_back


def sharded_again_by_accelerate() -> bool:
    """True when accelerate's ``BatchSamplerShard`` over several processes is
    what iterates the calling sampler."""
    return any(
        type(owner).__name__ == "BatchSamplerShard" and getattr(owner, "num_processes", 1) > 1
        for owner in _owners(sys._getframe(1))
    )


def samples_drawn_ahead() -> int:
    """Samples a plain multi-process ``DataLoader`` iterating the calling sampler
    draws ahead of delivery (``prefetch_factor x num_workers`` batches), else 0.

    torchdata's ``StatefulDataLoader`` has its own iterator class, which
    checkpoints the sampler at delivery, so it is not counted.
    """
    for owner in _owners(sys._getframe(1)):
        if isinstance(owner, _MultiProcessingDataLoaderIter):
            batch = getattr(owner._index_sampler, "batch_size", None) or 1
            return int(owner._prefetch_factor * owner._num_workers * batch)
    return 0
