"""The documentation: its examples run, and the site builds with no broken link.

Every Python block of ``docs/layouts.md`` preceded by ``<!-- writer: KIND -->``
runs as written on the files that writer made, with ``/data/KIND`` replaced by
their folder (``tests/read/test_writers.py`` checks those files' values).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.paths import ROOT
from helpers.writers import write_all

DOCS = Path(ROOT) / "docs"
TESTED = re.compile(r"<!-- writer: (\w+) -->\n```python\n(.*?)```", re.S)


def examples_marked_tested() -> list[tuple[str, str]]:
    return TESTED.findall((DOCS / "layouts.md").read_text())


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    return write_all(tmp_path_factory.mktemp("writers"), files=3)


def test_each_writer_has_a_tested_example() -> None:
    kinds = {kind for kind, _ in examples_marked_tested()}
    expected = {"netcdf4", "h5netcdf", "pandas_table", "pandas_fixed", "anndata", "hdf5plugin"}
    assert expected | {"demonstrations"} <= kinds


@pytest.mark.parametrize(("kind", "code"), examples_marked_tested(), ids=lambda v: v[:20])
def test_a_layouts_example_runs_as_written(
    written: dict[str, list[Path]], kind: str, code: str
) -> None:
    from h5pool import Loader, PooledH5Dataset

    folder = str(written[kind][0].parent)
    namespace = {"PooledH5Dataset": PooledH5Dataset, "Loader": Loader}
    exec(compile(code.replace(f"/data/{kind}", folder), f"layouts.md:{kind}", "exec"), namespace)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason='needs ".[docs]"')
def test_the_documentation_builds_strictly(tmp_path: Path) -> None:
    """``mkdocs build --strict``: a broken link, anchor or API reference fails."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )
    assert result.returncode == 0, result.stderr[-4000:]
