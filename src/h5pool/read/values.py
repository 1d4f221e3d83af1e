"""What a column of rows becomes for the user: tensors, strings, ragged lists, fields.

Why one place: ``ds[i]``, ``__getitems__`` and ``read_batch`` must give the same
types, and numpy's own answers differ between an array, a row of it and a
scalar taken from it (``bytes`` against ``numpy.bytes_``, ``numpy.void``
records that the default collate cannot stack).  Every read path turns its
numpy column of ``B`` rows into :func:`batch_values`, and a sample is row
``i`` of that (:func:`sample_values`; :func:`samples_of` splits a whole batch).

- numbers and bools: a tensor ``(B, ...)`` (numpy for long double);
- strings (fixed or variable length): ``list[str]`` decoded as UTF-8, or
  ``list[bytes]`` with ``strings="bytes"``;
- ragged rows (HDF5 variable-length numbers): ``list[Tensor]``, one 1-D
  tensor per row; :func:`pad_ragged` pads them for a model;
- compound rows: one entry per field, named ``"{key}.{field}"``, each
  converted by the same rules;
- opaque rows (HDF5 opaque, numpy ``V``): their bytes as a ``uint8`` tensor
  with one more axis, of the item's size, which collates as any tensor.

The "members" and "groups" layouts read a whole array per sample (a member, a
group's window); :func:`array_values` applies the same rules to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

Strings = Literal["str", "bytes"]
_TENSOR_KINDS = frozenset("biufc")
#: numpy types torch has no tensor type for: they stay numpy arrays.
_NO_TENSOR = frozenset(np.dtype(t) for t in (np.longdouble, np.clongdouble)) - {
    np.dtype(np.float64),
    np.dtype(np.complex128),
}


def tensor_ready(dtype: np.dtype[Any]) -> bool:
    """True when a row of ``dtype`` becomes a tensor as it is (``torch.from_numpy``)."""
    return dtype.kind in _TENSOR_KINDS and dtype.isnative and dtype not in _NO_TENSOR


def to_tensor(array: npt.NDArray[Any]) -> Any:
    """A tensor sharing the array's memory; strings, objects and long doubles stay numpy."""
    if array.dtype.kind not in _TENSOR_KINDS or array.dtype.newbyteorder("=") in _NO_TENSOR:
        return array
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if any(stride % array.itemsize for stride in array.strides):  # torch refuses these
        array = array.copy()
    return torch.from_numpy(array)


def batch_values(key: str, column: npt.NDArray[Any], strings: Strings = "str") -> dict[str, Any]:
    """``{name: value}`` for a column of ``B`` rows of ``key``."""
    dtype = column.dtype
    if dtype.fields:
        values: dict[str, Any] = {}
        for field in dtype.names or ():
            # A field is a strided view into the records: its own memory for torch.
            field_column = column[field].copy()
            values.update(batch_values(f"{key}.{field}", field_column, strings))
        return values
    if dtype.kind in "SU" or (dtype.kind == "O" and _holds_text(column)):
        return {key: [_text(item, strings) for item in column.tolist()]}
    if dtype.kind == "O":
        return {key: [_ragged(item) for item in column]}
    if dtype.kind == "V":  # opaque: its bytes, one more axis of the item's size
        raw = np.ascontiguousarray(column).view(np.uint8)
        return {key: to_tensor(raw.reshape(*column.shape, dtype.itemsize))}
    return {key: to_tensor(column)}


def array_values(key: str, array: npt.NDArray[Any], strings: Strings = "str") -> dict[str, Any]:
    """A whole array read for one sample (a member, a group's window), by the same
    rules with axis 0 as its rows: a 1-D string array gives ``list[str]``, a
    record array one entry per field.  A scalar gives one value (``str``, a 0-d
    tensor)."""
    if array.dtype.kind in _TENSOR_KINDS:
        return {key: to_tensor(array)}
    if array.ndim == 0:
        return sample_values(batch_values(key, array[None], strings), 0)
    return batch_values(key, array, strings)


def samples_of(batch: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Every row of a :func:`batch_values` result as a sample, in order.

    One ``unbind`` per tensor key instead of an index per sample and key: on
    ``__getitems__``'s path this halves the cost of splitting a batch.
    """
    columns = {
        name: value.unbind(0) if isinstance(value, torch.Tensor) else value
        for name, value in batch.items()
    }
    return [{name: column[i] for name, column in columns.items()} for i in range(count)]


def sample_values(batch: dict[str, Any], position: int) -> dict[str, Any]:
    """Row ``position`` of a :func:`batch_values` result (tensor rows are views)."""
    return {name: value[position] for name, value in batch.items()}


def pad_ragged(
    rows: Sequence[torch.Tensor], value: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged rows padded to the longest: ``(padded (B, longest, ...), lengths (B,))``.

    Parameters
    ----------
    rows
        Tensors whose first dimensions differ.
    value
        What the padding holds.

    Returns
    -------
    tuple
        The padded tensor and each row's length."""
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.int64)
    padded = torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True, padding_value=value)
    return padded, lengths


def collate_ragged(samples: Sequence[dict[str, Any]], value: float = 0.0) -> dict[str, Any]:
    """A DataLoader ``collate_fn`` for samples with ragged keys.

    Tensors of one shape are stacked; tensors of unequal first dimensions are
    padded with ``value`` by :func:`pad_ragged`, and their lengths go under
    ``"{key}.lengths"``; anything else is collected in a list.

    Parameters
    ----------
    samples
        The samples of one batch, as ``ds[i]`` gives them.
    value
        What the padding holds.

    Returns
    -------
    dict
        One stacked or padded value per key.
    """
    batch: dict[str, Any] = {}
    for key in samples[0]:
        column = [sample[key] for sample in samples]
        if all(isinstance(item, torch.Tensor) for item in column):
            if len({tuple(item.shape) for item in column}) == 1:
                batch[key] = torch.stack(column)
            else:
                batch[key], batch[f"{key}.lengths"] = pad_ragged(column, value)
        else:
            batch[key] = column
    return batch


def _holds_text(column: npt.NDArray[Any]) -> bool:
    first = next((item for item in column.flat if item is not None), None)
    return isinstance(first, bytes | str)


def _text(item: Any, strings: Strings) -> Any:
    if isinstance(item, list):  # a row of several strings
        return [_text(part, strings) for part in item]
    if strings == "bytes":
        return item.encode("utf-8") if isinstance(item, str) else bytes(item)
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)


def _ragged(item: Any) -> Any:
    if isinstance(item, np.ndarray):
        return to_tensor(np.ascontiguousarray(item))
    return item
