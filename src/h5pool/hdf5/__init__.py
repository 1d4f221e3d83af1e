"""The HDF5 layer: where a dataset's bytes are, and how to read and decode them.

A *byte map* records, once per file at index time, the file offset of a
contiguous dataset or the chunk table and filter pipeline of a chunked one.
Reads then go straight to ``pread`` and decoders outside libhdf5 (see
:mod:`h5pool.hdf5.decode`); what a byte map cannot reproduce exactly reads
through h5py.  No torch here.
"""

from h5pool.hdf5.byte_map import FileKeyMap, KeyMaps, KeySpec, map_dataset
from h5pool.hdf5.chunks import DecodedChunks, read_chunked_rows
from h5pool.hdf5.decode import decodable_reason, decode_chunk
from h5pool.hdf5.readers import RowReader, direct_offset

__all__ = [
    "DecodedChunks",
    "FileKeyMap",
    "KeyMaps",
    "KeySpec",
    "RowReader",
    "decodable_reason",
    "decode_chunk",
    "direct_offset",
    "map_dataset",
    "read_chunked_rows",
]
