from typing import Any

def read_rows(fds: Any, offsets: Any, limits: Any, row_bytes: int, out: Any) -> tuple[int, int]: ...
def unshuffle(src: Any, dst: Any, itemsize: int) -> None: ...
def inflate(src: Any, dst: Any) -> int: ...
def decode_chunks(
    fds: Any,
    offsets: Any,
    sizes: Any,
    masks: Any,
    limits: Any,
    outs: list[Any],
    deflate_at: int,
    shuffle_at: int,
    itemsize: int,
) -> tuple[int, int]: ...
def gather_rows(
    sources: list[Any], which: Any, rows: Any, row_bytes: int, out: Any, slots: Any
) -> None: ...
