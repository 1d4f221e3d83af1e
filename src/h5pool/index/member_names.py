"""``MemberNames``: the sample names of the "members" layout in O(files).

Why: one name per sample in the index costs memory, pickle and cache bytes
that grow with samples.  Most corpora name members by a pattern (a prefix plus
a counter, ``trajectory_0`` ... ``trajectory_{n-1}``), so a file's names are one
template and a first number.  Files whose names follow no such pattern keep
them explicitly, packed in a :class:`~h5pool.index.paths.PathList` (bytes plus
offsets); only those cost per name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from h5pool._typing import IntArray
from h5pool.index.paths import PathList

_NUMBERED = re.compile(r"^(.*?)(\d+)(\D*)$")
#: (prefix, suffix, zero-padded width or 0)
Template = tuple[str, str, int]


def name_pattern(names: Sequence[str]) -> tuple[Template, int] | None:
    """``(template, first)`` when ``names`` are ``prefix + counter + suffix`` with
    consecutive counters from ``first``, in this order; otherwise None."""
    if not names:
        return None
    match = _NUMBERED.match(names[0])
    if match is None:
        return None
    prefix, digits, suffix = match.groups()
    width = len(digits) if digits.startswith("0") and len(digits) > 1 else 0
    template = (prefix, suffix, width)
    first = int(digits)
    if all(name == spell(template, first + i) for i, name in enumerate(names)):
        return template, first
    return None


def spell(template: Template, number: int) -> str:
    prefix, suffix, width = template
    return f"{prefix}{number:0{width}d}{suffix}" if width else f"{prefix}{number}{suffix}"


class MemberNames:
    """Per file, either a template and a first counter, or explicit names."""

    def __init__(
        self,
        templates: list[Template],
        template_of: npt.NDArray[np.int32],
        first: IntArray,
        explicit: PathList,
    ) -> None:
        self.templates = templates
        #: Template number of each file, or -1 when its names are explicit.
        self.template_of = template_of
        #: First counter (patterned files) or first explicit name (the others).
        self.first = first
        self.explicit = explicit

    @classmethod
    def from_files(cls, per_file: Sequence[Sequence[str]]) -> MemberNames:
        templates: dict[Template, int] = {}
        template_of = np.full(len(per_file), -1, dtype=np.int32)
        first = np.zeros(len(per_file), dtype=np.int64)
        explicit: list[str] = []
        for number, names in enumerate(per_file):
            pattern = name_pattern(names)
            if pattern is None:
                first[number] = len(explicit)
                explicit.extend(names)
            else:
                template, first[number] = pattern
                template_of[number] = templates.setdefault(template, len(templates))
        return cls(list(templates), template_of, first, PathList(explicit))

    @classmethod
    def empty(cls) -> MemberNames:
        return cls.from_files([])

    def name(self, file_number: int, local: int) -> str:
        template = int(self.template_of[file_number])
        if template < 0:
            return self.explicit[int(self.first[file_number]) + local]
        return spell(self.templates[template], int(self.first[file_number]) + local)

    def names_of(self, file_number: int, count: int) -> tuple[str, ...]:
        return tuple(self.name(file_number, local) for local in range(count))

    def __len__(self) -> int:
        return len(self.template_of)

    @property
    def nbytes(self) -> int:
        return int(self.template_of.nbytes + self.first.nbytes + self.explicit.nbytes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MemberNames):
            return NotImplemented
        return (
            self.templates == other.templates
            and np.array_equal(self.template_of, other.template_of)
            and np.array_equal(self.first, other.first)
            and self.explicit == other.explicit
        )

    __hash__ = None  # type: ignore[assignment]

    # -- persistence -------------------------------------------------------------

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        root, blob, offsets = self.explicit.arrays()
        return {
            "members_templates": np.array(json.dumps([root, self.templates])),
            "members_template_of": self.template_of,
            "members_first": self.first,
            "members_blob": blob,
            "members_offsets": offsets,
        }

    @classmethod
    def from_arrays(cls, saved: Any, files: int) -> MemberNames:
        root, templates = json.loads(str(saved["members_templates"]))
        template_of = np.asarray(saved["members_template_of"], dtype=np.int32)
        first = np.asarray(saved["members_first"], dtype=np.int64)
        explicit = PathList.from_arrays(root, saved["members_blob"], saved["members_offsets"])
        if len(template_of) != files or len(first) != files:
            raise ValueError("member names do not match the file list")
        if bool(np.any(template_of >= len(templates))):
            raise ValueError("member names refer to an unknown template")
        return cls(
            [(str(p), str(s), int(w)) for p, s, w in templates], template_of, first, explicit
        )
