"""``PathList``: a million paths in a few bytes each, as one blob and its offsets.

Why: a Python list of ``str`` costs about 100 bytes per path (object header,
pointer, characters), in every worker process and in every pickle sent to one;
numpy's fixed-width strings cost four bytes per character of the *longest*
path.  Corpus paths share a long folder, so the list keeps that root once and
the rest as UTF-8 bytes in one array, with an offset per path.  A path is
decoded only when asked for, which the reader does once per file opened.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np
import numpy.typing as npt

_SEPARATOR = "/"


class PathList(Sequence[str]):
    """An immutable sequence of paths (or URLs) stored as root + packed remainders."""

    __slots__ = ("_blob", "_offsets", "root")

    def __init__(self, paths: Iterable[str] = ()) -> None:
        items = [os.fspath(p) for p in paths]
        self.root = _common_root(items)
        cut = len(self.root)
        encoded = [os.fsencode(p[cut:]) for p in items]
        lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        self._offsets = _narrow(offsets)
        self._blob: npt.NDArray[np.uint8] = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    @classmethod
    def from_arrays(
        cls, root: str, blob: npt.NDArray[np.uint8], offsets: npt.NDArray[Any]
    ) -> PathList:
        """Rebuild from :meth:`arrays` (an index cache), checking they fit together."""
        offsets = np.asarray(offsets)
        if (
            offsets.ndim != 1
            or offsets.dtype.kind not in "iu"
            or len(offsets) < 1
            or int(offsets[0]) != 0
            or int(offsets[-1]) != len(blob)
            or (len(offsets) > 1 and bool(np.any(np.diff(offsets) < 0)))
        ):
            raise ValueError("path offsets do not match the path bytes")
        paths = cls()
        paths.root = root
        paths._blob = np.ascontiguousarray(blob, dtype=np.uint8)
        paths._offsets = _narrow(offsets.astype(np.int64))
        return paths

    def arrays(self) -> tuple[str, npt.NDArray[np.uint8], npt.NDArray[Any]]:
        """``(root, blob, offsets)``: what an index cache stores."""
        return self.root, self._blob, self._offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, item: int) -> str: ...

    @overload
    def __getitem__(self, item: slice) -> list[str]: ...

    def __getitem__(self, item: int | slice) -> str | list[str]:
        if isinstance(item, slice):
            return [self[i] for i in range(*item.indices(len(self)))]
        number = int(item)
        if number < 0:
            number += len(self)
        if not 0 <= number < len(self):
            raise IndexError(f"path number {item} out of range for {len(self)} paths")
        first, stop = int(self._offsets[number]), int(self._offsets[number + 1])
        return self.root + os.fsdecode(self._blob[first:stop].tobytes())

    def __iter__(self) -> Iterator[str]:
        blob = self._blob.tobytes()
        offsets = self._offsets.tolist()
        for first, stop in itertools.pairwise(offsets):
            yield self.root + os.fsdecode(blob[first:stop])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PathList):
            return len(self) == len(other) and list(self) == list(other)
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(repr(p) for p in self[:3])
        more = f", ... ({len(self)} paths)" if len(self) > 3 else ""
        return f"PathList([{shown}{more}])"

    @property
    def nbytes(self) -> int:
        """Bytes held by the packed arrays (the root aside)."""
        return int(self._blob.nbytes + self._offsets.nbytes)


def _common_root(paths: Sequence[str]) -> str:
    """The longest shared prefix that ends at a folder separator."""
    if not paths:
        return ""
    # Character by character on purpose: URLs too; the cut below ends it at a '/'.
    prefix = os.path.commonprefix(list(paths))  # noqa: RUF071
    cut = prefix.rfind(_SEPARATOR)
    return prefix[: cut + 1] if cut >= 0 else ""


def _narrow(offsets: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
    """Four-byte offsets while the blob is under 4 GiB."""
    if len(offsets) and int(offsets[-1]) < 2**32:
        return offsets.astype(np.uint32)
    return offsets
