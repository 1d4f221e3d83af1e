"""Type aliases shared by the layers, so that each module names the same thing
the same way."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

#: Row numbers, file numbers, offsets: the index's arrays are int64 throughout.
IntArray = npt.NDArray[np.int64]
#: A path as users give it: text or an ``os.PathLike``.
PathLike = str | os.PathLike[str]
#: What the corpus is: a folder, a file, a glob or a URL, or a list of them.
FileSpec = PathLike | Sequence[PathLike]
#: Global sample numbers, as a list or an array.
Indices = Sequence[int] | IntArray
#: One sample: key -> value.
Sample = dict[str, Any]
