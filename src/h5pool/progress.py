"""Progress bars that appear only where a person watches: on a terminal, on stderr.

Why: tqdm writes carriage returns to a file or pipe as happily as to a
terminal, which leaves debris in logs and captured output.  ``disable=None``
is tqdm's own switch for "only on a TTY".
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def progress_bar(show: bool = True, **options: Any) -> tqdm[Any]:
    """A tqdm bar on stderr, shown when ``show`` and stderr is a terminal."""
    options.setdefault("leave", False)
    return tqdm(file=sys.stderr, disable=None if show else True, **options)
