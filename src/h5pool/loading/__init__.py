"""The loading layer: the order of an epoch and the batches of a training loop.

:class:`BlockShuffleSampler` shuffles blocks of files so that a pool of
``max_open`` files is enough, split exactly over ranks and workers;
:class:`Loader` reads whole batches ahead in threads or worker processes.
"""

from h5pool.loading.loader import Loader, default_loader_threads
from h5pool.loading.order import EpochOrder
from h5pool.loading.sampler import BlockShuffleSampler
from h5pool.loading.stats import EpochStats

__all__ = [
    "BlockShuffleSampler",
    "EpochOrder",
    "EpochStats",
    "Loader",
    "default_loader_threads",
]
