"""The compiled kernel against plain Python, and against input that lies.

Every function is checked against a plain-Python oracle on random input, and
fuzzed with offsets, sizes and chunk bytes that are wrong: a wrong input is a
``PlanReadError`` (or ``ValueError``/``TypeError`` for misuse), never a crash,
a read past a file or buffer, or bytes from elsewhere.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h5pool.hdf5 import _kernel, decode
from h5pool.hdf5.kernel import PlanReadError, decode_chunks, inflate, read_rows, unshuffle

SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def shuffle(data: bytes, itemsize: int) -> bytes:
    """HDF5's shuffle, in numpy: byte ``b`` of element ``i`` goes to ``b * count + i``."""
    count = len(data) // itemsize
    whole = np.frombuffer(data[: count * itemsize], np.uint8).reshape(count, itemsize)
    return whole.T.tobytes() + data[count * itemsize :]


@SETTINGS
@given(st.binary(min_size=0, max_size=3000), st.sampled_from([1, 2, 3, 4, 5, 8, 16]))
def test_unshuffle_inverts_shuffle(data: bytes, itemsize: int) -> None:
    assert unshuffle(shuffle(data, itemsize), itemsize).tobytes() == data


def test_unshuffle_refuses_a_wrong_target() -> None:
    with pytest.raises(ValueError, match="unshuffle"):
        _kernel.unshuffle(b"abcd", bytearray(3), 2)
    with pytest.raises(ValueError):
        _kernel.unshuffle(b"abcd", bytearray(4), 0)


@SETTINGS
@given(st.binary(min_size=0, max_size=5000), st.integers(1, 9))
def test_inflate_equals_zlib(data: bytes, level: int) -> None:
    assert inflate(zlib.compress(data, level), len(data)).tobytes() == data


@SETTINGS
@given(st.binary(min_size=1, max_size=300), st.integers(-3, 3))
def test_inflate_refuses_damage_and_wrong_sizes(data: bytes, off_by: int) -> None:
    packed = zlib.compress(data)
    if off_by:
        with pytest.raises(ValueError):
            inflate(packed, max(len(data) + off_by, 0) or len(data) + 1)
    with pytest.raises(ValueError):
        inflate(packed[: len(packed) // 2], len(data))


@pytest.fixture
def bytes_file(tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    data = np.random.default_rng(0).integers(0, 256, 64 << 10, dtype=np.uint8).tobytes()
    path = tmp_path / "bytes.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    yield fd, data
    os.close(fd)


@SETTINGS
@given(
    rows=st.lists(st.integers(0, 255), min_size=0, max_size=60),
    row_bytes=st.sampled_from([1, 7, 64, 256]),
)
def test_read_rows_equals_slicing(
    bytes_file: tuple[int, bytes], rows: list[int], row_bytes: int
) -> None:
    fd, data = bytes_file
    offsets = np.array(rows, dtype=np.int64) * row_bytes
    out = np.empty((len(rows), row_bytes), np.uint8)
    count = len(rows)
    read_rows(np.full(count, fd), offsets, np.full(count, len(data)), row_bytes, out)
    for position, row in enumerate(rows):
        assert out[position].tobytes() == data[row * row_bytes : (row + 1) * row_bytes]


@SETTINGS
@given(offset=st.integers(-(1 << 20), 1 << 20), limit=st.integers(0, 1 << 17))
def test_read_rows_never_reads_past_the_limit_or_the_file(
    bytes_file: tuple[int, bytes], offset: int, limit: int
) -> None:
    fd, data = bytes_file
    out = np.full((2, 512), 7, np.uint8)
    offsets = np.array([0, offset], dtype=np.int64)
    limits = np.array([limit, limit], dtype=np.int64)
    fits_limit = offset >= 0 and offset + 512 <= limit and limit >= 512
    try:
        read_rows(np.array([fd, fd]), offsets, limits, 512, out)
    except PlanReadError as exc:
        assert not (fits_limit and offset + 512 <= len(data))
        assert exc.position in (0, 1)
        return
    assert fits_limit and offset + 512 <= len(data)
    assert out[1].tobytes() == data[offset : offset + 512]


def test_read_rows_refuses_misuse(bytes_file: tuple[int, bytes]) -> None:
    fd, _ = bytes_file
    ones = np.ones(2, dtype=np.int64)
    with pytest.raises(ValueError, match="out holds"):
        _kernel.read_rows(ones * fd, ones, ones * 10_000, 64, np.empty(100, np.uint8))
    with pytest.raises(TypeError, match="int64"):
        _kernel.read_rows(ones.astype(np.int32), ones, ones, 1, np.empty(2, np.uint8))
    with pytest.raises(ValueError, match="differ in length"):
        _kernel.read_rows(ones, ones[:1], ones, 1, np.empty(2, np.uint8))
    with pytest.raises(PlanReadError, match="Bad file descriptor"):
        read_rows(np.array([987654]), np.array([0]), np.array([64]), 64, np.empty(64, np.uint8))


def write_chunks(path: Path, chunks: list[bytes]) -> tuple[np.ndarray, int]:
    """The chunks one after another in a file: their (offset, size, mask) table."""
    table, position = [], 16
    with open(path, "wb") as out:
        out.write(b"\0" * 16)
        for chunk in chunks:
            out.write(chunk)
            table.append((position, len(chunk), 0))
            position += len(chunk)
    return np.array(table, dtype=np.int64).reshape(-1, 3), position


@SETTINGS
@given(
    values=st.lists(st.binary(min_size=64, max_size=64), min_size=1, max_size=6),
    masks=st.lists(st.integers(0, 3), min_size=6, max_size=6),
    level=st.integers(1, 9),
)
@pytest.mark.parametrize("backend", ["kernel", "isal loop", "kernel through decode"])
def test_decode_chunks_equals_zlib_and_shuffle(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    values: list[bytes],
    masks: list[int],
    level: int,
) -> None:
    """Pipeline (shuffle, deflate); a mask bit skips its filter, as HDF5 writes it.
    The kernel's one call, and ``decode_deflate_chunks`` with ISA-L's loop and
    with the kernel as its fallback, give the same bytes."""
    stored = []
    for data, mask in zip(values, masks, strict=False):
        step = data if mask & 1 else shuffle(data, 4)
        stored.append(step if mask & 2 else zlib.compress(step, level))
    path = tmp_path / f"chunks-{backend}-{level}.bin"
    table, size = write_chunks(path, stored)
    table[:, 2] = masks[: len(values)]
    outs = [np.empty(64, np.uint8) for _ in values]
    fd = os.open(path, os.O_RDONLY)
    try:
        fds = np.full(len(values), fd)
        pipeline = ((2, (4,)), (1, (4,)))
        if backend == "kernel":
            decode_chunks(fds, table, np.full(len(values), size), outs, pipeline)
        else:
            monkeypatch.setattr(decode, "INFLATE_BACKEND", "isal" if "isal" in backend else "zlib")
            decode.decode_deflate_chunks(fds, table, np.full(len(values), size), outs, pipeline)
    finally:
        os.close(fd)
    assert [out.tobytes() for out in outs] == values


@SETTINGS
@given(damage=st.binary(min_size=1, max_size=200), where=st.integers(0, 2))
def test_decode_chunks_refuses_damaged_chunks(tmp_path: Path, damage: bytes, where: int) -> None:
    good = zlib.compress(bytes(range(64)))
    chunks = [good, good, good]
    chunks[where] = damage
    path = tmp_path / f"damaged-{where}.bin"
    table, size = write_chunks(path, chunks)
    outs = [np.empty(64, np.uint8) for _ in chunks]
    fd = os.open(path, os.O_RDONLY)
    try:
        decode_chunks(np.full(3, fd), table, np.full(3, size), outs, ((1, ()),))
    except PlanReadError as exc:
        assert exc.position == where and "chunk at byte" in str(exc)
    else:  # random bytes that happen to inflate to exactly 64 bytes
        assert zlib.decompress(damage) and len(zlib.decompress(damage)) == 64
    finally:
        os.close(fd)


def test_decode_chunks_stays_inside_the_file(tmp_path: Path) -> None:
    table, size = write_chunks(tmp_path / "c.bin", [zlib.compress(b"x" * 64)])
    fd = os.open(tmp_path / "c.bin", os.O_RDONLY)
    try:
        for offset, stored, limit in ((-1, 10, size), (0, size + 1, size), (size, 1, size)):
            bad = np.array([[offset, stored, 0]], dtype=np.int64)
            with pytest.raises(PlanReadError, match=r"outside the file|short read"):
                decode_chunks(
                    np.array([fd]), bad, np.array([limit]), [np.empty(64, np.uint8)], ((1, ()),)
                )
        with pytest.raises(ValueError, match="deflate and shuffle"):
            decode_chunks(
                np.array([fd]), table, np.array([size]), [np.empty(64, np.uint8)], ((32015, ()),)
            )
    finally:
        os.close(fd)
