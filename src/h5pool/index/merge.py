"""Put an index together from pieces of others: a cache's unchanged files and new scans.

Why vectorised: a cached start in the "stat" or "listing" mode keeps almost
every file of the cache, and rebuilding a Python object per file (its byte
map, its member names) costs seconds at 100,000 files; gathering the cache's
arrays costs milliseconds.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from h5pool._typing import IntArray
from h5pool.hdf5.byte_map import CHUNKED, KeyMaps, KeySpec, chunk_grid
from h5pool.index.corpus_index import CorpusIndex
from h5pool.index.groups import GroupTable
from h5pool.index.member_names import MemberNames, Template
from h5pool.index.paths import PathList


def combine(indexes: list[CorpusIndex], source: IntArray, number: IntArray) -> CorpusIndex:
    """An index whose file ``f`` is file ``number[f]`` of ``indexes[source[f]]``.

    Every index must have the same layout, keys and group.
    """
    first = indexes[0]
    counts = _gather([i.counts for i in indexes], source, number)
    files = PathList(
        indexes[s].files[n] for s, n in zip(source.tolist(), number.tolist(), strict=True)
    )
    named = first.layout in ("members", "groups")
    groups = (
        _combine_groups([i.groups for i in indexes], source, number)
        if first.layout == "groups"
        else GroupTable()
    )
    # Names per file: one per member, or one per group.
    name_counts = groups.per_file if first.layout == "groups" else counts
    members = (
        _combine_members([i.members for i in indexes], source, number, name_counts)
        if named
        else MemberNames.empty()
    )
    maps = {
        key: _combine_maps(
            [i.maps[key] for i in indexes], [i.counts for i in indexes], source, number
        )
        for key in first.maps
    }
    return CorpusIndex(
        files=files,
        counts=counts,
        layout=first.layout,
        keys=first.keys,
        group=first.group,
        sizes=_gather([i.sizes for i in indexes], source, number),
        mtimes=_gather([i.mtimes for i in indexes], source, number),
        members=members,
        maps=maps,
        groups=groups,
    )


def _combine_groups(parts: list[GroupTable], source: IntArray, number: IntArray) -> GroupTable:
    per_file = _gather([p.per_file for p in parts], source, number)
    firsts = [np.cumsum(p.per_file) - p.per_file for p in parts]
    starts = np.empty(len(source), dtype=np.int64)
    base = 0
    for which, part in enumerate(parts):
        chosen = source == which
        starts[chosen] = base + firsts[which][number[chosen]]
        base += len(part.lengths)
    stacked = np.concatenate([p.lengths for p in parts]) if parts else np.zeros(0, np.int64)
    new_starts = np.cumsum(per_file) - per_file
    rows = np.repeat(starts - new_starts, per_file) + np.arange(int(per_file.sum()))
    return GroupTable(per_file, stacked[rows])


def _gather(arrays: list[npt.NDArray[np.int64]], source: IntArray, number: IntArray) -> IntArray:
    out = np.empty(len(source), dtype=np.int64)
    for which, array in enumerate(arrays):
        chosen = source == which
        out[chosen] = array[number[chosen]]
    return out


def chunks_per_file(maps: KeyMaps, counts: IntArray) -> IntArray:
    """How many rows of ``maps.chunks`` each file owns (0 for contiguous or HDF5)."""
    owned = np.zeros(len(counts), dtype=np.int64)
    for spec_number, spec in enumerate(maps.specs):
        if spec.kind != CHUNKED:
            continue
        chosen = maps.spec_ids == spec_number
        per_row_of_chunks = int(np.prod(chunk_grid(spec, 1)[1:], dtype=np.int64))
        owned[chosen] = -(-counts[chosen] // spec.chunk_shape[0]) * per_row_of_chunks
    return owned


def _combine_maps(
    parts: list[KeyMaps], counts: list[IntArray], source: IntArray, number: IntArray
) -> KeyMaps:
    specs: dict[KeySpec, int] = {}
    renumbered = [
        np.array([specs.setdefault(spec, len(specs)) for spec in part.specs], dtype=np.int32)
        for part in parts
    ]
    spec_ids = np.empty(len(source), dtype=np.int32)
    positions = np.empty(len(source), dtype=np.int64)
    owned = np.empty(len(source), dtype=np.int64)
    table_start = np.empty(len(source), dtype=np.int64)  # in the stacked tables
    base = 0
    for which, part in enumerate(parts):
        chosen = source == which
        picked = number[chosen]
        spec_ids[chosen] = renumbered[which][part.spec_ids[picked]] if len(picked) else []
        positions[chosen] = part.positions[picked]
        owned[chosen] = chunks_per_file(part, counts[which])[picked]
        table_start[chosen] = base + part.positions[picked]
        base += len(part.chunks)
    stacked = np.concatenate([part.chunks for part in parts]) if parts else np.empty((0, 3))
    chunked = owned > 0
    new_starts = np.cumsum(owned) - owned
    positions[chunked] = new_starts[chunked]
    rows = np.repeat(table_start - new_starts, owned) + np.arange(int(owned.sum()))
    chunks = stacked[rows].astype(np.int64).reshape(-1, 3)
    return KeyMaps(list(specs), spec_ids, positions, chunks)


def _combine_members(
    parts: list[MemberNames], source: IntArray, number: IntArray, counts: IntArray
) -> MemberNames:
    templates: dict[Template, int] = {}
    renumbered = [
        np.array([templates.setdefault(t, len(templates)) for t in part.templates] + [-1])
        for part in parts
    ]
    template_of = np.empty(len(source), dtype=np.int32)
    first = np.empty(len(source), dtype=np.int64)
    explicit: list[str] = []
    for position, (which, picked) in enumerate(zip(source.tolist(), number.tolist(), strict=True)):
        part = parts[which]
        template = int(part.template_of[picked])
        template_of[position] = renumbered[which][template]  # -1 stays -1
        if template >= 0:
            first[position] = part.first[picked]
        else:
            first[position] = len(explicit)
            explicit.extend(part.names_of(picked, int(counts[position])))
    return MemberNames(list(templates), template_of, first, PathList(explicit))
