"""Files damaged the way a flipped byte damages them, for the error tests."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

#: The float32 datatype message's properties: bit offset 0, precision 32,
#: exponent at bit 23 of 8 bits, mantissa at 0 of 23 bits, exponent bias 127.
FLOAT32_PROPERTIES = bytes([0x00, 0x00, 0x20, 0x00, 0x17, 0x08, 0x00, 0x17, 0x7F, 0x00, 0x00, 0x00])


def write_damaged_datatype(path: Path) -> None:
    """A float32 dataset whose exponent bias is changed, as one flipped byte does:
    HDF5 opens it, and h5py cannot find a numpy type for it."""
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.arange(40, dtype="f4").reshape(10, 4))
        f.create_dataset("label", data=np.arange(10))
    data = bytearray(path.read_bytes())
    where = data.find(FLOAT32_PROPERTIES)
    assert where > 0 and data.find(FLOAT32_PROPERTIES, where + 1) == -1
    data[where + 10] = 0xFF  # the bias's third byte: 0xFF007F
    path.write_bytes(bytes(data))
