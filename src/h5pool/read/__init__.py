"""The read layer: a batch of global sample numbers in, tensors out.

:class:`ReadEngine` reads rows through the byte maps (``pread`` and chunk
decoding, in helper threads when a batch is large), the named-sample readers
serve the members and groups layouts, and :mod:`h5pool.read.values` turns
numpy rows into what a training loop takes (tensors, ``str``, ragged lists).
"""

from h5pool.read.engine import ReadEngine
from h5pool.read.named import NamedSamples, stack_samples
from h5pool.read.threads import default_batch_threads
from h5pool.read.values import collate_ragged, pad_ragged

__all__ = [
    "NamedSamples",
    "ReadEngine",
    "collate_ragged",
    "default_batch_threads",
    "pad_ragged",
    "stack_samples",
]
